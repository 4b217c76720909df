"""A camera's own overrides of the video worker's options (a Camera resource's `options`)."""

from __future__ import annotations

import pytest

from facegrid.operator.core.resources import worker_options
from facegrid.video.core.options import OptionError, Options, override


def test_overrides_are_converted_like_the_ini_file() -> None:
    base = Options(min_score=-7.0, realtime=False)
    changed = override(
        base,
        worker_options(
            {"minScore": -3.5, "realtime": True, "body": {"place": "door", "floor": "2"}}
        ),
        "camera c1",
    )
    assert changed.min_score == -3.5 and changed.realtime is True
    assert changed.body == (("place", "door"), ("floor", "2"))
    assert changed.detectors_max == base.detectors_max  # the rest stays the worker's
    assert override(base, {}, "camera c1") == base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_score": "high"}, "camera c1 option min_score: 'high' is not a valid float"),
        ({"scale": "2"}, "camera c1 option scale must be in (0, 1]"),
        ({"detect_every": "0"}, "camera c1 option detect_every must be at least 1"),
        ({"api_token": "x"}, "camera c1 option api_token: not an option a camera can override"),
        ({"no_such": "1"}, "camera c1 option no_such: not an option a camera can override"),
    ],
)
def test_bad_overrides_name_the_camera_and_option(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError) as refused:
        override(Options(), overrides, "camera c1")
    assert str(refused.value) == message

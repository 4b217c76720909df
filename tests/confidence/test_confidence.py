"""The seed's confidence scale on our distances: presets land on the measured anchors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from facegrid.confidence import DEFAULT, PRESETS, confidence_of, distance_for, threshold


@pytest.mark.parametrize(
    ("preset", "distance"), [("strict", 0.381), ("medium", 0.499), ("low", 0.691)]
)
def test_presets_select_the_distances_measured_for_their_false_accept_rates(
    preset: str, distance: float
) -> None:
    assert distance_for(PRESETS[preset]) == pytest.approx(distance)
    assert confidence_of(distance) == pytest.approx(PRESETS[preset])


def test_the_scale_runs_from_identical_to_unrelated() -> None:
    assert confidence_of(0.0) == 1.0
    assert confidence_of(1.5) == confidence_of(9.0) == 0.0
    distances = np.linspace(0, 2, 200)
    confidences = [confidence_of(d) for d in distances]
    assert all(a >= b for a, b in itertools.pairwise(confidences))
    for d in np.linspace(0, 1.49, 50):
        assert distance_for(confidence_of(float(d))) == pytest.approx(float(d), abs=1e-9)


def test_default_sits_between_strict_and_medium() -> None:
    assert distance_for(PRESETS["strict"]) < distance_for(DEFAULT) < distance_for(PRESETS["medium"])
    assert math.isinf(distance_for(0.0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0.75),
        ("strict", 0.7834),
        ("Medium", 0.6616),
        ("low", 0.569),
        ("none", 0.0),
        ("0.8", 0.8),
        (1, 1.0),
    ],
)
def test_thresholds_as_the_api_takes_them(value: str | float | None, expected: float) -> None:
    assert threshold(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "loose", "nan"])
def test_bad_thresholds_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="threshold must be a preset"):
        threshold(value)

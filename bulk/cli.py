"""`facegrid mass-enroll` (also `facegrid-mass-enroll`): findface-mass-enroll's commands.

    facegrid mass-enroll prepare --meta-const='Phillip J. Fry' '/home/user/images/*'
    facegrid mass-enroll print [--failed]
    facegrid mass-enroll run --token TOKEN --api http://127.0.0.1:8000/ [--parallel 10]
        [--gallery G] [--mf-selector all|biggest|reject] [--gender] [--age] [--emotions]
        [--failed] [--stats-interval 1] [--settle 30]

`--job PATH` (default ffmassenroll.job) goes before or after the command. Exit status: 0 when
every image is enrolled, 1 when some failed (see `print --failed`), 2 for a bad command line,
job file or API (wrong token, unknown gallery, unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from facegrid.bulk.client import ApiUnusable, Wanted
from facegrid.bulk.job import FAILED, Job, JobError
from facegrid.bulk.prepare import MetaSource, PrepareError, prepare
from facegrid.bulk.progress import summary
from facegrid.bulk.runner import RunOptions, run_job

DEFAULT_JOB = Path("ffmassenroll.job")
PROGRAM = "mass-enroll"


def _job_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--job", type=Path, default=default, help=f"job file (default: {DEFAULT_JOB})"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Add mass-enroll's options and commands to `parser` (its own, or a `facegrid` subparser)."""
    _job_option(parser, DEFAULT_JOB)
    commands = parser.add_subparsers(dest="mass_enroll_command", required=True)

    make = commands.add_parser("prepare", help="prepare upload job")
    _job_option(make, argparse.SUPPRESS)
    make.add_argument("images", nargs="*", help="image globs, e.g. '*.jpg' 'photos/**/*.png'")
    make.add_argument("--meta-const", help="shared metadata string")
    make.add_argument(
        "--meta-companion", help="extension of metadata files accompanying the images (e.g. txt)"
    )
    make.add_argument(
        "--meta-csv", type=Path, help="CSV file of meta,image rows containing metadata"
    )
    make.add_argument(
        "--meta-filename", action="store_true", help="file name (without extension) as meta"
    )
    make.add_argument(
        "--split", type=int, help="split the job file into N parts (default: don't split)"
    )
    make.set_defaults(func=dispatch, mass_enroll=cmd_prepare)

    show = commands.add_parser("print", help="print contents of job file as JSON")
    _job_option(show, argparse.SUPPRESS)
    show.add_argument("--failed", action="store_true", help="show only failed images")
    show.set_defaults(func=dispatch, mass_enroll=cmd_print)

    run = commands.add_parser("run", help="run upload job")
    _job_option(run, argparse.SUPPRESS)
    run.add_argument(
        "--parallel", type=int, default=10, help="number of concurrent uploads (default: 10)"
    )
    run.add_argument(
        "--api", default="http://127.0.0.1:8000/", help="API url (default: %(default)s)"
    )
    run.add_argument("--token", required=True, help="API token")
    run.add_argument(
        "--gallery", default="default", help="enroll faces into this gallery (default: default)"
    )
    run.add_argument("--failed", action="store_true", help="include failed images")
    run.add_argument("--mf-selector", choices=["all", "biggest", "reject"], help="mf_selector")
    run.add_argument("--gender", action="store_true", help="extract gender")
    run.add_argument("--age", action="store_true", help="extract age")
    run.add_argument("--emotions", action="store_true", help="extract emotions")
    run.add_argument(
        "--stats-interval",
        type=float,
        default=1.0,
        help="print progress every STATS_INTERVAL seconds, 0 never (default: 1)",
    )
    run.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds the server may still finish a request whose client was killed; an "
        "interrupted image is sent again only if not enrolled by then (default: 30)",
    )
    run.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for one answer (default: 60)"
    )
    run.set_defaults(func=dispatch, mass_enroll=cmd_run)


def cmd_prepare(args: argparse.Namespace) -> int:
    meta = MetaSource(
        const=args.meta_const,
        companion=args.meta_companion,
        csv=args.meta_csv,
        filename=args.meta_filename,
    )
    prepare(args.job, args.images, meta, sys.stdout, args.split)
    return 0


def cmd_print(args: argparse.Namespace) -> int:
    with Job(args.job) as job:
        images = job.images(FAILED) if args.failed else job.images()
        out = sys.stdout
        out.write("[")
        for n, image in enumerate(images):
            out.write(("," if n else "") + "\n  " + json.dumps(image.as_json(), ensure_ascii=False))
        out.write("\n]\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    options = RunOptions(
        api=args.api,
        token=args.token,
        gallery=args.gallery,
        parallel=args.parallel,
        failed=args.failed,
        wanted=Wanted(args.mf_selector, args.gender, args.age, args.emotions),
        stats_interval=args.stats_interval,
        settle=args.settle,
        timeout=args.timeout,
    )
    tally = asyncio.run(run_job(args.job, options, sys.stdout))
    with Job(args.job) as job:
        left_failed = job.count(FAILED)
    print(summary(tally, failed_hint=left_failed > 0))
    return 1 if left_failed else 0


def dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.mass_enroll(args))
    except (JobError, PrepareError, ApiUnusable, ValueError) as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `print | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"\n{PROGRAM}: interrupted; run again to resume", file=sys.stderr)
        return 130


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`facegrid mass-enroll ...`."""
    configure(sub.add_parser("mass-enroll", help="enroll faces from images in bulk (resumable)"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="facegrid-mass-enroll", description="Enroll faces from images in bulk."
    )
    configure(parser)
    args = parser.parse_args(argv)
    sys.exit(dispatch(args))

"""The command line every FaceGrid service shares: `--config`, `--check-config`, `--help`.

`--help` lists every setting with its environment variable and default, so an operator never has
to read code to configure a service.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TypeVar

from facegrid.observability import configure_logging
from facegrid.settings import ConfigError, ServiceSettings, exit_on_config_error

S = TypeVar("S", bound=ServiceSettings)


def settings_help(settings_cls: type[ServiceSettings]) -> str:
    lines = [
        "settings (environment variable, or key in the config file's "
        f"[{settings_cls.section}] table):"
    ]
    for name, info in settings_cls.model_fields.items():
        default = "required" if info.is_required() else f"default {info.default!r}"
        lines.append(f"  {settings_cls.env_prefix()}{name.upper()}  ({default})")
        if info.description:
            lines.append(f"      {info.description}")
    return "\n".join(lines)


def parse(
    program: str, description: str, settings_cls: type[S], argv: list[str] | None = None
) -> tuple[S, bool]:
    """Parse the command line and load settings; exit 2 with a readable message if they are bad."""
    parser = argparse.ArgumentParser(
        prog=program,
        description=description,
        epilog=settings_help(settings_cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default: $FACEGRID_CONFIG, if set)"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings, print them and exit (0 when valid, 2 when not)",
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_cls.load(args.config)
    except ConfigError as e:
        exit_on_config_error(program, e)
        raise  # unreachable: exit_on_config_error exits
    return settings, args.check_config


def run_service(
    program: str,
    description: str,
    settings_cls: type[S],
    serve: Callable[[S], Coroutine[None, None, None]],
    argv: list[str] | None = None,
) -> None:
    settings, check_only = parse(program, description, settings_cls, argv)
    if check_only:
        print(settings.describe())
        print(f"{program}: configuration OK")
        return
    configure_logging(program, settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except OSError as e:
        # A port taken, a folder not writable: the operator's to fix, so say it plainly.
        print(f"{program}: {e}", file=sys.stderr)
        sys.exit(1)

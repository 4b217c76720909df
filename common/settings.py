"""Settings shared by every FaceGrid process: how they are read, validated and reported.

Each service declares one frozen settings class (its own `settings` module, the only place that
reads the environment). Values come, highest priority first, from `FACEGRID_<SECTION>_<NAME>`
environment variables, then from the `[section]` table of an optional TOML config file
(`--config PATH` or `FACEGRID_CONFIG`), then from the defaults. Unknown keys in the file are
errors, and so is any value that does not validate: start-up stops with a message naming the
variable or key, and exit status 2.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from facegrid import balancing
from facegrid.fetch import check_proxy

CONFIG_ENV_VAR = "FACEGRID_CONFIG"
EXIT_BAD_CONFIG = 2


class ConfigError(Exception):
    """A setting is missing, malformed or unknown; the message names it."""


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return value


HostPort = Annotated[str, AfterValidator(_check_host_port)]
"""An address to listen on or connect to, such as `127.0.0.1:50051` or `[::]:8000`."""


OptionalHostPort = Annotated[
    HostPort | None, BeforeValidator(lambda v: None if v in ("", None) else v)
]
"""A HostPort that an empty value switches off."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list given as `a,b,c` in an environment variable, or as an array in TOML."""


HostPorts = Annotated[CommaList, AfterValidator(lambda v: [_check_host_port(a) for a in v])]
"""Addresses given as `host1:port1,host2:port2`."""


def _check_replicas(value: str) -> str:
    if "," not in value:
        return _check_host_port(value)
    balancing.target(value)  # a list: raises ValueError unless it is ip:port,ip:port,...
    return value


Replicas = Annotated[str, AfterValidator(_check_replicas)]
"""A service's replicas to spread calls over: `host:port` (every address DNS gives the name, as a
headless Service lists its pods) or `ip:port,ip:port,...` (see facegrid.balancing)."""


def _check_networks(value: list[str]) -> list[str]:
    for entry in value:
        ipaddress.ip_network(entry, strict=False)  # its ValueError names the bad entry
    return value


Networks = Annotated[CommaList, AfterValidator(_check_networks)]
"""IP networks in CIDR notation, such as `10.0.0.0/8,192.168.1.0/24`."""

ProxyUrl = Annotated[str, AfterValidator(check_proxy)]
"""An HTTP proxy as `http://host:port`, or empty for none."""


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class ServiceSettings(BaseSettings):
    """Base of every service's settings: logging, plus the loading rules in `load()`."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    # The config file table and the environment prefix are both derived from this name.
    section: ClassVar[str]

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def env_prefix(cls) -> str:
        # The one-machine stack's own settings are the short, documented ones (FACEGRID_DATA_DIR).
        return "FACEGRID_" if cls.section == "stack" else f"FACEGRID_{cls.section.upper()}_"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "section" in cls.__dict__:
            cls.model_config = {**cls.model_config, "env_prefix": cls.env_prefix()}

    @classmethod
    def load(cls, config_file: Path | None = None) -> Self:
        """Read the environment and the config file; raise ConfigError naming the bad setting."""
        if config_file is None and os.environ.get(CONFIG_ENV_VAR):
            config_file = Path(os.environ[CONFIG_ENV_VAR])
        file_values = _read_section(config_file, cls.section) if config_file else {}
        env_values = EnvSettingsSource(cls)()
        try:
            return cls.model_validate({**file_values, **env_values})
        except ValidationError as e:
            raise ConfigError(_describe(cls, e, env_values, file_values, config_file)) from e

    def describe(self) -> str:
        """The effective settings, one `ENV_VAR=value` line each, for `--check-config`."""
        prefix = self.env_prefix()
        return "\n".join(
            f"{prefix}{name.upper()}={'' if value is None else value}"
            for name, value in self.model_dump().items()
        )


def _read_section(path: Path, section: str) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    unknown = sorted(set(document) - KNOWN_SECTIONS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown section(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_SECTIONS))}"
        )
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [{section}] must be a table")
    return table


KNOWN_SECTIONS = frozenset(
    {"stack", "gateway", "extractor", "indexer", "licensing", "controlplane", "video", "operator"}
)


def _describe(
    cls: type[ServiceSettings],
    error: ValidationError,
    env_values: dict[str, Any],
    file_values: dict[str, Any],
    config_file: Path | None,
) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        if field not in env_values and field in file_values:
            where = f"{field!r} in [{cls.section}] of {config_file}"
        else:
            where = f"{cls.env_prefix()}{field.upper()}"
        value = item.get("input")
        shown = "" if item["type"] in ("missing", "extra_forbidden") else f" = {value!r}"
        lines.append(f"  {where}{shown}: {item['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def exit_on_config_error(program: str, error: ConfigError) -> None:
    print(f"{program}: {error}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


class LicensedSettings(ServiceSettings):
    """Settings of a component that heartbeats to the license server (facegrid.licence)."""

    licensing: OptionalHostPort = Field(
        None, description="license server gRPC address; empty: community mode"
    )
    license_grace: float = Field(
        300.0,
        gt=0,
        description="seconds to keep working on the last licence while licensing is unreachable",
    )

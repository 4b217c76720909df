"""The units in systemd/ (FaceGrid on hosts, as the seed's services ran):
systemd itself checks them, they start programs the package installs, and the example
configuration they read is valid for every service."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

UNITS = REPO_ROOT / "systemd"
BIN = Path(sys.executable).parent
# Templates, with the instance each is checked as (the example env files' names).
INSTANCES = {"indexer": "shard-0", "extractor": "0", "video": "door"}


def _units() -> list[Path]:
    return sorted([*UNITS.glob("*.service"), *UNITS.glob("*.target")])


def _service(unit: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(unit)
    return parser["Service"]


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (apt-get install systemd)"
    names = []
    for unit in _units():
        # Installed under /opt/facegrid; checked against this environment's programs.
        text = unit.read_text().replace("/opt/facegrid/bin/", f"{BIN}/")
        name = unit.name
        if "@." in name:
            name = name.replace("@.", f"@{INSTANCES[name.split('-')[1].split('@')[0]]}.")
        (tmp_path / name).write_text(text)
        names.append(name)
    assert len(names) == 7
    checked = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    # Unknown keys are only warned about: any output is a mistake.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_units_start_the_packages_programs() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for unit in UNITS.glob("*.service"):
        program = _service(unit)["ExecStart"].split()[0]
        assert program.startswith("/opt/facegrid/bin/"), unit.name
        assert Path(program).name in scripts, unit.name


@pytest.mark.parametrize(
    "service", ["licensing", "controlplane", "gateway", "indexer", "extractor"]
)
def test_the_example_configuration_is_valid_for_each_service(service: str) -> None:
    unit = UNITS / f"facegrid-{service}{'@' if service in INSTANCES else ''}.service"
    section = _service(unit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    instance = INSTANCES.get(service, "")
    for line in section.get("Environment", "").splitlines():
        key, _, value = line.strip().partition("=")
        env[key] = value.replace("%i", instance)
    env_file = section.get("EnvironmentFile", "").splitlines()[-1].lstrip("-")
    if "%i" in env_file:
        example = UNITS / Path(env_file.replace("%i", instance)).name
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    argv = section["ExecStart"].replace("/opt/facegrid/bin/", f"{BIN}/").split()
    argv = [str(UNITS / "facegrid.toml") if a == "/etc/facegrid/facegrid.toml" else a for a in argv]
    checked = subprocess.run(
        [*argv, "--check-config"], env=env, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert "configuration OK" in checked.stdout
    if service == "indexer":  # the instance's own settings reached it
        assert "FACEGRID_INDEXER_SHARD_NAME=shard-0" in checked.stdout
        assert "FACEGRID_INDEXER_LISTEN=127.0.0.1:33001" in checked.stdout

"""The contracts and the package layout stay in sync with what is built and installed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grpc
import pytest

from facegrid.v1 import controlplane_pb2, extractor_pb2, index_pb2, licensing_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_proto_files() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "service", "methods"),
    [
        (extractor_pb2, "Extractor", {"Detect", "Extract", "GetModelInfo"}),
        (
            index_pb2,
            "IndexShard",
            {
                "Add",
                "Delete",
                "DropGallery",
                "ConfigureGallery",
                "Get",
                "Search",
                "List",
                "Stats",
                "Snapshot",
                "Replicate",
                "FetchSnapshot",
                "Promote",
            },
        ),
        (
            controlplane_pb2,
            "ControlPlane",
            {
                "CreateGallery",
                "GetGallery",
                "ListGalleries",
                "DeleteGallery",
                "CreateCamera",
                "GetCamera",
                "ListCameras",
                "UpdateCamera",
                "DeleteCamera",
                "ReportCameras",
                "GetPlacement",
                "WatchPlacements",
            },
        ),
        (licensing_pb2, "Licensing", {"Check", "Acquire", "Release", "Heartbeat", "GetInfo"}),
    ],
)
def test_services_offer_the_methods_of_the_architecture(
    module: object, service: str, methods: set[str]
) -> None:
    descriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    assert descriptor.full_name == f"facegrid.v1.{service}"
    assert {m.name for m in descriptor.methods} == methods


def test_every_python_folder_is_a_listed_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    found = set(mapping)  # each mapped folder, operator/ (a namespace package) included
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            if relative != Path("."):
                found.add(".".join([package, *relative.parts]))
    # proto/facegrid/v1 lies inside no other mapping's folder, so nothing is counted twice.
    assert found == set(setuptools["packages"])


def test_operator_folder_never_shadows_the_standard_library() -> None:
    # With an __init__.py, `python -m anything` run from the repository root would import
    # operator/ in place of the standard library's `operator` and fail before it starts.
    assert not (ROOT / "operator" / "__init__.py").exists()
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import operator; print(operator.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "lib/python" in result.stdout


def test_grpc_runtime_is_at_least_the_generator() -> None:
    generated = (ROOT / "proto" / "facegrid" / "v1" / "index_pb2_grpc.py").read_text()
    wanted = generated.split("GRPC_GENERATED_VERSION = '")[1].split("'")[0]
    assert tuple(map(int, grpc.__version__.split(".")[:3])) >= tuple(map(int, wanted.split(".")))

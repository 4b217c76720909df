"""The container images (docker/Dockerfile for CPUs, docker/Dockerfile.gpu for the CUDA
extractor), checked without a Docker engine (none runs here): the Dockerfiles are parsed, and
what they copy, install, run and name is checked against the repository and the chart.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from facegrid.cli import build_parser
from facegrid.extractor.core.models import BUNDLE_VERSION

from .chart import CHART, ROOT, containers, render, render_values

DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, parts = [], []
    for line in path.read_text().splitlines():
        if not parts and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        logical.append(" ".join(p.strip() for p in [*parts, line]))
        parts = []
    assert not parts, f"{path.name} ends inside a continued line"
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1]) for i in logical]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def declared_image(path: Path) -> str:
    (image,) = re.findall(r"^# Image: (\S+)", path.read_text(), re.MULTILINE)
    return image


def _copied_sources(path: Path) -> list[str]:
    sources = []
    for name, arguments in instructions(path):
        if name in ("COPY", "ADD") and not arguments.startswith("--from"):
            *copied, _destination = shlex.split(arguments)
            sources += copied
    return sources


@pytest.mark.parametrize("image", DOCKERFILES)
def test_what_the_image_copies_exists(image: str) -> None:
    sources = _copied_sources(DOCKERFILES[image])
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source


@pytest.mark.parametrize("image", DOCKERFILES)
def test_the_image_holds_every_package(image: str) -> None:
    """pip installs from the copied tree: every folder pyproject maps a package to is copied."""
    copied = {s.rstrip("/") for s in _copied_sources(DOCKERFILES[image])}
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    assert {f.split("/")[0] for f in folders} <= copied
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def test_the_build_context_keeps_what_the_images_copy() -> None:
    """.dockerignore is an allowlist: excluding everything, then re-including each copied path."""
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and r[0] != "#"]
    for image in DOCKERFILES.values():
        for source in _copied_sources(image):
            included = False
            for rule in rules:
                negated = rule.startswith("!")
                if fnmatch.fnmatch(source.rstrip("/"), rule.lstrip("!").rstrip("/")):
                    included = negated
            assert included, f"{source} is not in the build context"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_the_image_runs_as_the_charts_non_root_user(image: str) -> None:
    final = stages(DOCKERFILES[image])[-1]
    users = [arguments for name, arguments in final if name == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric uid lets Kubernetes check runAsNonRoot"
    assert int(uid) == VALUES["podSecurityContext"]["runAsUser"]
    assert int(gid) == VALUES["podSecurityContext"]["runAsGroup"]
    env = " ".join(arguments for name, arguments in final if name == "ENV")
    assert "HOME=/tmp" in env  # the chart's only writable folder besides volumes


def test_the_cpu_image_is_python_slim_with_the_operator() -> None:
    built = stages(DOCKERFILES["cpu"])
    for stage in built:
        assert stage[0][1].startswith("python:3.11-slim")
    run = " ".join(a for n, a in instructions(DOCKERFILES["cpu"]) if n == "RUN")
    assert "pip install '.[operator]'" in run


def test_the_gpu_image_runs_onnxruntime_gpu_on_cuda_and_cudnn() -> None:
    text = DOCKERFILES["gpu"].read_text()
    (base,) = re.findall(r"^ARG CUDA_BASE=(\S+)", text, re.MULTILINE)
    assert base.startswith("nvidia/cuda:12.") and "cudnn" in base and "runtime" in base
    for stage in stages(DOCKERFILES["gpu"]):
        assert stage[0][1].split()[0] == "${CUDA_BASE}"
    run = " ".join(a for n, a in instructions(DOCKERFILES["gpu"]) if n == "RUN")
    # Both onnxruntime builds install the same module: only the GPU one may remain.
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in run
    assert run.index("uninstall") < run.rindex("onnxruntime-gpu")
    assert "FACEGRID_EXTRACTOR_DEVICE=cuda" in text


@pytest.mark.parametrize("image", DOCKERFILES)
def test_models_are_built_into_the_image_where_the_chart_looks(image: str) -> None:
    runs = [a for n, a in instructions(DOCKERFILES[image]) if n == "RUN"]
    (build,) = [r for r in runs if r.startswith("facegrid models build")]
    argv = shlex.split(build.split("&&")[0])[1:]
    args = build_parser().parse_args(argv)
    assert args.models_command == "build"
    assert VALUES["extractor"]["models"]["path"] == f"{args.out}/{BUNDLE_VERSION}"
    copies = [a for n, a in stages(DOCKERFILES[image])[-1] if n == "COPY"]
    assert f"--from=build {args.out} {args.out}" in copies


def test_the_chart_refers_to_the_images() -> None:
    assert VALUES["image"]["repository"] == declared_image(DOCKERFILES["cpu"])
    gpu = VALUES["extractor"]["gpu"]["image"]["repository"]
    assert gpu == declared_image(DOCKERFILES["gpu"])
    for name in ("Dockerfile", "Dockerfile.gpu"):
        assert f"docker/{name}" in (CHART / "values.yaml").read_text()
        assert f"docker/{name}" in (ROOT / "helm" / "README.md").read_text()


def test_every_command_the_chart_runs_is_an_entry_point() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    documents = render() + render_values("local-controlplane")
    documents += render("--set", "extractor.models.build=true")
    commands = {c["command"][0] for _, c in containers(documents) if "command" in c}
    facegrid = commands - {"mongod", "redis-server"}
    assert facegrid <= scripts.keys(), facegrid - scripts.keys()
    assert {
        "facegrid-gateway",
        "facegrid-extractor",
        "facegrid-indexer",
        "facegrid-licensing",
        "facegrid-operator",
        "facegrid-controlplane",
        "facegrid-video",
        "facegrid",
    } <= facegrid
    gpu_command = [a for n, a in instructions(DOCKERFILES["gpu"]) if n == "CMD"][-1]
    assert yaml.safe_load(gpu_command)[0] in scripts

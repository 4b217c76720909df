"""k8s/: the plain manifests for users without Helm are exactly what the chart renders with its
defaults (scripts/render_manifests.py), valid for Kubernetes 1.33, and the kustomization
installs all of them.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from .chart import ROOT, validate

K8S = ROOT / "k8s"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_manifests", ROOT / "scripts" / "render_manifests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_committed_manifests_are_a_fresh_render() -> None:
    script = _script()
    fresh, committed = script.render(), script.committed()
    stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
    assert stale == [], "k8s/ drifted from the chart: run python scripts/render_manifests.py"


def test_every_manifest_is_valid_for_kubernetes() -> None:
    for path in sorted((K8S / "manifests").glob("*.yaml")):
        for document in _documents(path):
            validate(document)


def test_namespaced_objects_are_in_the_facegrid_namespace() -> None:
    for path in sorted((K8S / "manifests").glob("*.yaml")):
        for document in _documents(path):
            metadata = document["metadata"]
            assert isinstance(metadata, dict)
            if document["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                assert "namespace" not in metadata
            elif document["kind"] != "CustomResourceDefinition":
                assert metadata["namespace"] == "facegrid", (path.name, metadata["name"])
            assert "app.kubernetes.io/managed-by" not in metadata.get("labels", {})


def test_rbac_and_crds_are_included() -> None:
    kinds = Counter(d["kind"] for p in (K8S / "manifests").glob("*.yaml") for d in _documents(p))
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert kinds[kind] == 1, kind
    assert kinds["CustomResourceDefinition"] == 3
    crds = {
        d["metadata"]["name"]  # type: ignore[index]
        for d in _documents(K8S / "manifests" / "customresourcedefinition.yaml")
    }
    assert crds == {p.name.removesuffix(".yaml") for p in (K8S / "crds").glob("*.yaml")}


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "facegrid"
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(
        f"manifests/{p.name}" for p in (K8S / "manifests").glob("*.yaml")
    )
    assert listed[0] == "manifests/customresourcedefinition.yaml"  # before their objects


# .ci/run fetches kubectl into .tools (as it does helm); elsewhere the one on PATH is used.
KUBECTL = (
    str(ROOT / ".tools" / "kubectl")
    if (ROOT / ".tools" / "kubectl").exists()
    else (shutil.which("kubectl"))
)


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl: run .ci/run, which fetches one")
def test_kubectl_builds_the_kustomization() -> None:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    files = [d for p in (K8S / "manifests").glob("*.yaml") for d in _documents(p)]
    assert len(built) == len(files)


def test_the_samples_stay_beside_the_manifests() -> None:
    samples = {p.name for p in (K8S / "samples").glob("*.yaml")}
    assert {"facegallery.yaml", "camera.yaml"} <= samples

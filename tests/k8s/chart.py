"""Rendering the Helm chart and validating what it renders, shared by the chart's tests.

No API server runs here (see shared/notes/kubernetes-testing.md), so objects are validated as
the API server would: built-in kinds against Kubernetes 1.33's own OpenAPI schemas
(`kubernetes-validate`, strict: unknown fields fail), custom resources of our CRDs (FaceGallery,
Camera, KopfPeering) against the CRD's `openAPIV3Schema` with `jsonschema`.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "facegrid"
HELM = Path(os.environ.get("FACEGRID_HELM", ROOT / ".tools" / "helm"))
KUBERNETES = "1.33.0"
RELEASE = "fg"
NAMESPACE = "faces"

# The values files CI renders (helm/facegrid/ci/, chart-testing's convention); "default" is
# the chart's own values.yaml alone.
VALUES = {"default": None} | {
    p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))
}

# Prometheus Operator kinds: its CRDs are not installed here, so only their shape is checked.
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"

Document = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM.exists(), f"no helm at {HELM}: run .ci/run (it fetches it) or set FACEGRID_HELM"
    # No cluster is ever contacted: keep helm away from any kubeconfig on the machine.
    environment = {**os.environ, "KUBECONFIG": str(ROOT / ".no-kubeconfig")}
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, env=environment
    )


@functools.cache
def _render(args: tuple[str, ...]) -> str:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*args: str) -> list[Document]:
    """The chart's objects (a fresh copy each call: tests may change them)."""
    return [d for d in yaml.safe_load_all(_render(args)) if d]


def render_values(name: str, *args: str) -> list[Document]:
    """The objects rendered with one of VALUES's files."""
    path = VALUES[name]
    return render(*(("-f", str(path)) if path else ()), *args)


def notes(*args: str) -> str:
    """NOTES.txt as `helm install` prints it (a client-side dry run: no cluster needed)."""
    result = helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


@functools.cache
def crds() -> dict[str, Document]:
    """The chart's CRDs by `<group>/<version>/<Kind>`."""
    found = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            found[f"{crd['spec']['group']}/{version['name']}/{crd['spec']['names']['kind']}"] = {
                **crd,
                "_schema": version["schema"]["openAPIV3Schema"],
            }
    return found


def validate(document: Document) -> None:
    """Raise if the API server would refuse the object."""
    api_version, kind = document["apiVersion"], document["kind"]
    crd = crds().get(f"{api_version}/{kind}")
    if crd is not None:
        jsonschema.Draft4Validator(crd["_schema"]).validate(document)
    elif api_version == PROMETHEUS_OPERATOR:
        assert kind in ("ServiceMonitor", "PodMonitor"), kind
        assert document["spec"]["selector"]["matchLabels"], document
    else:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def workloads(documents: list[Document]) -> list[Document]:
    return [d for d in documents if d["kind"] in ("Deployment", "StatefulSet")]


def video_worker_template(documents: list[Document]) -> Document | None:
    """The operator's video worker file (the `<release>-video-worker` ConfigMap), parsed."""
    for d in documents:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-video-worker"):
            parsed: Document = yaml.safe_load(d["data"]["video-worker.yaml"])
            return parsed
    return None


def pod_specs(documents: list[Document]) -> Iterator[tuple[str, Document]]:
    """(owner name, pod spec) of every pod the chart makes, including the video workers the
    operator will make from its template."""
    for d in workloads(documents):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]
    template = video_worker_template(documents)
    if template is not None:
        yield "video-worker template", template["deployment"]["spec"]["template"]["spec"]


def containers(documents: list[Document]) -> Iterator[tuple[str, Document]]:
    """(owner/container, container) of every container and init container."""
    for owner, spec in pod_specs(documents):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{owner}/{container['name']}", container


def env(container: Document) -> dict[str, Any]:
    """A container's variables: the value, or the valueFrom source."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def find(documents: list[Document], kind: str, name: str) -> Document:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def named(documents: list[Document], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in documents if d["kind"] == kind}


def container(documents: list[Document], name: str) -> Document:
    (found,) = [c for owner, c in containers(documents) if owner.endswith(f"/{name}")]
    return found

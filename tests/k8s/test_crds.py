"""The FaceGallery and Camera CRDs: what `kubectl` and the API server rely on, the samples valid
under their schemas, bad resources refused, and the schemas in step with the code.

No API server runs here (see shared/notes/kubernetes-testing.md), so the schemas are checked as
one validates them: as JSON Schema (OpenAPI v3's draft-4 flavour), with unknown fields refused
as `kubectl apply --validate=strict` refuses them.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from facegrid.operator.core import placement
from facegrid.operator.core.resources import worker_options
from facegrid.video.core.options import PER_CAMERA, Options

K8S = Path(__file__).resolve().parents[2] / "k8s"
# FaceGrid's own; kopf's peering CRD beside them is checked in test_chart_security.py.
CRDS = {
    p.name.split(".")[0]: yaml.safe_load(p.read_text())
    for p in (K8S / "crds").glob("*.facegrid.io.yaml")
}
SAMPLES = {
    "facegalleries": yaml.safe_load((K8S / "samples" / "facegallery.yaml").read_text()),
    "cameras": yaml.safe_load((K8S / "samples" / "camera.yaml").read_text()),
}


def _schema(plural: str) -> dict[str, Any]:
    (version,) = CRDS[plural]["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused wherever fields are listed."""
    schema = copy.deepcopy(schema)

    def close(node: dict[str, Any], path: str) -> None:
        if "properties" in node and "additionalProperties" not in node and path != ".metadata":
            node["additionalProperties"] = False
        for name, child in node.get("properties", {}).items():
            close(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            close(node["items"], f"{path}[]")

    close(schema, "")
    return schema


def _errors(plural: str, resource: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(_strict(_schema(plural)))
    return [e.message for e in validator.iter_errors(resource)]


def test_both_definitions_are_found() -> None:
    assert set(CRDS) == {"facegalleries", "cameras"}


@pytest.mark.parametrize("plural", ["facegalleries", "cameras"])
def test_what_kubectl_and_the_api_server_rely_on(plural: str) -> None:
    crd = CRDS[plural]
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{plural}.facegrid.io"
    assert spec["group"] == "facegrid.io" and spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["plural"] == plural and names["shortNames"]
    assert names["categories"] == ["facegrid"]  # `kubectl get facegrid` lists both kinds
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata"):
            continue
        node = schema
        for part in re.sub(r"\[\?.*\]", "", path).strip(".").split("."):
            node = node.get("properties", {}).get(part) or node.get("items", {})
            assert node, f"printer column {column['name']}: {path} is not in the schema"


@pytest.mark.parametrize("plural", ["facegalleries", "cameras"])
def test_the_schema_is_structural(plural: str) -> None:
    """Every node says its type (the API server refuses a CRD whose schema does not)."""

    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, f"{path or 'root'} has no type"
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(_schema(plural), "")


@pytest.mark.parametrize("plural", ["facegalleries", "cameras"])
def test_the_samples_are_valid(plural: str) -> None:
    assert _errors(plural, SAMPLES[plural]) == []


def _with(resource: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(resource)
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return changed


_DROP = object()


@pytest.mark.parametrize(
    ("plural", "path", "value"),
    [
        ("facegalleries", "spec.shards", 0),
        ("facegalleries", "spec.shards", _DROP),
        ("facegalleries", "spec.shard", 2),  # a typo is an unknown field
        ("facegalleries", "spec.hnsw.m", 2),
        ("facegalleries", "spec.galleryName", "two words"),
        ("facegalleries", "spec.replicasPerShard", -1),
        ("cameras", "spec.url", 5),
        ("cameras", "spec.roi", "100x100"),
        ("cameras", "spec.detector", "Entrance Pool"),
        ("cameras", "spec.options.requestUrl", "/v1/detect"),
        ("cameras", "spec.options.scale", 0),
        ("cameras", "spec.options.minScore", 3),
        ("cameras", "spec.options.sourceParams", {"timeout": 5}),
        ("cameras", "status.phase", "Flying"),
    ],
)
def test_bad_resources_are_refused(plural: str, path: str, value: Any) -> None:
    assert _errors(plural, _with(SAMPLES[plural], path, value)), f"{path}={value!r} passed"


def test_gallery_names_follow_the_control_planes_rule() -> None:
    pattern = _schema("facegalleries")["properties"]["spec"]["properties"]["galleryName"]
    for name in ["employees", "a_b-9", "x" * 48, "x" * 49, "two words", "", "ünï"]:
        by_schema = re.fullmatch(pattern["pattern"].strip("^$"), name) is not None
        by_code = placement._GALLERY_NAME.fullmatch(name) is not None
        assert by_schema == by_code, name


def test_camera_options_are_video_worker_options() -> None:
    """Exactly the options a worker lets a camera override, each converted as the operator
    passes it on (camelCase to the option's name)."""
    options = _schema("cameras")["properties"]["spec"]["properties"]["options"]["properties"]
    names = {name: worker_options({name: 1}).popitem()[0] for name in options}
    for name, snake in names.items():
        assert snake in Options.__dataclass_fields__, f"{name} is not a video worker option"
    assert set(names.values()) == PER_CAMERA


@pytest.mark.parametrize("plural", ["facegalleries", "cameras"])
def test_the_definitions_are_valid_kubernetes_objects(plural: str) -> None:
    """The CRD documents themselves, against Kubernetes 1.33's own schema (strict: an unknown
    or misspelt field fails)."""
    kubernetes_validate.validate(CRDS[plural], "1.33.0", strict=True)

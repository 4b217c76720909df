"""What the chart's values do: MongoDB and Redis built in or external, the operator or the local
control plane, the operator's video worker template, Ingress, monitoring, NOTES.txt; and that
the chart's plain YAML is linted and every value is commented.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from facegrid.cli import build_parser
from facegrid.indexer.core import Shard
from facegrid.indexer.metrics import register as register_shard_metrics
from facegrid.indexer.replica import ReplicationState
from facegrid.observability import RequestMetrics
from facegrid.video.metrics import WorkerMetrics

from .chart import (
    CHART,
    NAMESPACE,
    ROOT,
    container,
    env,
    find,
    helm,
    named,
    notes,
    render,
    render_values,
    validate,
    video_worker_template,
)

OPERATOR_ENV = {
    "FACEGRID_OPERATOR_NAMESPACE": NAMESPACE,
    "FACEGRID_OPERATOR_LISTEN": "0.0.0.0:50050",
    "FACEGRID_OPERATOR_METRICS_LISTEN": "0.0.0.0:51050",
    "FACEGRID_OPERATOR_INDEXER_STATEFULSET": "fg-indexer",
    "FACEGRID_OPERATOR_INDEXER_SERVICE": "fg-indexer",
    "FACEGRID_OPERATOR_INDEXER_PORT": "33001",
    "FACEGRID_OPERATOR_INDEXER_FOLLOWERS": "0",
    "FACEGRID_OPERATOR_VIDEO_TEMPLATE": "/etc/facegrid/operator/video-worker.yaml",
}


def test_yamllint_passes_on_the_charts_yaml_and_k8s() -> None:
    paths = [
        CHART / "values.yaml",
        CHART / "Chart.yaml",
        CHART / "ci",
        CHART / "crds",
        ROOT / "k8s",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,  # .yamllint.yaml
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_value_is_commented() -> None:
    """Each key of values.yaml has a comment on its line or on the line above."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    bare = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not re.match(r"^(- )?[\w./-]+:", stripped):
            continue
        above = lines[number - 1].strip() if number else ""
        if "#" not in line and not above.startswith("#"):
            bare.append(f"{number + 1}: {stripped}")
    assert bare == []


def _statefulsets(documents: list[dict[str, Any]]) -> set[str]:
    return named(documents, "StatefulSet")


def test_mongo_and_redis_are_built_in_by_default() -> None:
    documents = render()
    assert {"fg-mongo", "fg-redis"} <= _statefulsets(documents)
    assert {"fg-mongo", "fg-redis"} <= named(documents, "Service")
    assert container(documents, "mongo")["image"] == "mongo:7"
    assert container(documents, "redis")["image"] == "redis:7"
    gateway = env(container(documents, "gateway"))
    assert gateway["FACEGRID_GATEWAY_MONGO_URI"] == "mongodb://fg-mongo:27017"
    assert gateway["FACEGRID_GATEWAY_MONGO_DB"] == "facegrid"
    assert gateway["FACEGRID_GATEWAY_REDIS_URL"] == "redis://fg-redis:6379/0"
    for name in ("fg-mongo", "fg-redis"):
        (claim,) = find(documents, "StatefulSet", name)["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"]


def test_external_databases_replace_the_built_in_ones() -> None:
    documents = render_values("external-db", "--set", "operator.enabled=false")
    assert not {"fg-mongo", "fg-redis"} & _statefulsets(documents)
    assert not {"fg-mongo", "fg-redis"} & named(documents, "Service")
    for name, prefix in (
        ("gateway", "FACEGRID_GATEWAY"),
        ("controlplane", "FACEGRID_CONTROLPLANE"),
    ):
        variables = env(container(documents, name))
        assert variables[f"{prefix}_MONGO_URI"] == {
            "secretKeyRef": {"name": "facegrid-mongo", "key": "uri"}
        }
        assert variables[f"{prefix}_MONGO_DB"] == "faces"
    gateway = env(container(documents, "gateway"))
    assert gateway["FACEGRID_GATEWAY_REDIS_URL"] == "rediss://redis.databases.svc:6380/2"

    inline = render_values("minimal")
    assert not {"fg-mongo", "fg-redis"} & _statefulsets(inline)
    gateway = env(container(inline, "gateway"))
    assert gateway["FACEGRID_GATEWAY_MONGO_URI"] == "mongodb://mongo.example:27017"
    assert gateway["FACEGRID_GATEWAY_REDIS_URL"] == "redis://redis.example:6379/0"


def test_the_operator_is_the_control_plane_by_default() -> None:
    documents = render()
    assert "fg-controlplane" not in named(documents, "Deployment")
    operator = container(documents, "operator")
    assert operator["command"] == ["facegrid-operator"]
    assert env(operator) == OPERATOR_ENV
    deployment = find(documents, "Deployment", "fg-operator")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == "fg-operator"
    (mount,) = [m for m in operator["volumeMounts"] if m["name"] == "video-worker"]
    template_path = Path(OPERATOR_ENV["FACEGRID_OPERATOR_VIDEO_TEMPLATE"])
    assert mount["mountPath"] == str(template_path.parent)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "video-worker"]
    configmap = find(documents, "ConfigMap", volume["configMap"]["name"])
    assert template_path.name in configmap["data"]
    service = find(documents, "Service", "fg-operator")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 50050,
        "metrics": 51050,
    }
    assert find(documents, "KopfPeering", "facegrid")
    assert env(container(documents, "gateway"))["FACEGRID_GATEWAY_CONTROLPLANE"] == (
        "fg-operator:50050"
    )
    # Video workers come from the operator, not the chart.
    assert not [n for n in named(documents, "Deployment") if n.startswith("fg-video-")]
    refused = helm("template", "fg", str(CHART), "--set", "video.pools[0].name=entrance")
    assert refused.returncode != 0
    assert "video.pools" in refused.stderr


def test_without_the_operator_the_local_control_plane_runs() -> None:
    documents = render_values("local-controlplane")
    assert "fg-operator" not in named(documents, "Deployment")
    assert not named(documents, "ServiceAccount") | named(documents, "Role")
    assert not named(documents, "KopfPeering") | named(documents, "ConfigMap")
    assert "fg-controlplane" in named(documents, "Service")
    plane = env(container(documents, "controlplane"))
    assert plane["FACEGRID_CONTROLPLANE_MONGO_URI"] == "mongodb://fg-mongo:27017"
    assert env(container(documents, "gateway"))["FACEGRID_GATEWAY_CONTROLPLANE"] == (
        "fg-controlplane:50050"
    )
    entrance = find(documents, "Deployment", "fg-video-entrance")
    assert entrance["spec"]["replicas"] == 2
    (video,) = entrance["spec"]["template"]["spec"]["containers"]
    variables = env(video)
    assert variables["FACEGRID_VIDEO_CONTROLPLANE"] == "fg-controlplane:50050"
    assert variables["FACEGRID_VIDEO_DETECTOR_NAME"] == "entrance"
    assert variables["FACEGRID_VIDEO_DETECTORS_MAX"] == "5"
    assert variables["FACEGRID_VIDEO_API_TOKEN"]["secretKeyRef"]["name"] == "entrance-token"
    assert "FACEGRID_VIDEO_WORKER_NAME" not in variables  # the operator's assignment only
    parking = find(documents, "Deployment", "fg-video-parking")["spec"]["template"]["spec"]
    (video,) = parking["containers"]
    assert env(video)["FACEGRID_VIDEO_API_TOKEN"]["secretKeyRef"]["name"] == "fg-video-token"


def _as_the_operator_makes_it(template: dict[str, Any], pool: str, cameras: int) -> Any:
    """A pool's Deployment, filled in as the operator does (issue 8's template contract)."""
    max_per_pod = template["pools"].get(pool, {}).get("detectorsMax", template["detectorsMax"])
    deployment = template["deployment"]
    deployment["metadata"].update(name=f"{template['namePrefix']}-{pool}", namespace=NAMESPACE)
    for labels in (
        deployment["metadata"]["labels"],
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
    ):
        labels["facegrid.io/pool"] = pool
    deployment["spec"]["replicas"] = math.ceil(cameras / max_per_pod)
    (video,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "video"
    ]
    video["env"] += [
        {"name": "FACEGRID_VIDEO_DETECTOR_NAME", "value": pool},
        {"name": "FACEGRID_VIDEO_DETECTORS_MAX", "value": str(max_per_pod)},
    ]
    return deployment


def test_the_video_worker_template_makes_valid_deployments() -> None:
    documents = render_values("monitoring")
    template = video_worker_template(documents)
    assert template is not None
    assert template["namePrefix"] == "fg-video"
    assert template["detectorsMax"] == 4
    assert template["pools"] == {"entrance": {"detectorsMax": 5}}
    deployment = _as_the_operator_makes_it(template, "entrance", cameras=11)
    validate(deployment)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["name"] == "fg-video-entrance"
    (video,) = deployment["spec"]["template"]["spec"]["containers"]
    variables = env(video)
    assert variables["FACEGRID_VIDEO_WORKER_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["FACEGRID_VIDEO_API_TOKEN"] == {
        "secretKeyRef": {"name": "fg-video-token", "key": "token"}
    }
    assert variables["FACEGRID_VIDEO_API_URL"] == "http://fg-gateway:8000"
    assert variables["FACEGRID_VIDEO_CONTROLPLANE"] == "fg-operator:50050"
    assert variables["FACEGRID_VIDEO_EXTRACTOR"] == "fg-extractor-pods:18665"
    assert variables["FACEGRID_VIDEO_METRICS_LISTEN"] == "0.0.0.0:9100"
    # The template itself leaves the pool's name and size to the operator.
    untouched = video_worker_template(documents)
    assert untouched is not None
    (video,) = untouched["deployment"]["spec"]["template"]["spec"]["containers"]
    assert "FACEGRID_VIDEO_DETECTOR_NAME" not in env(video)


def test_the_video_token_secret_can_be_named() -> None:
    template = video_worker_template(render("--set", "video.apiTokenSecret=workers"))
    assert template is not None
    (video,) = template["deployment"]["spec"]["template"]["spec"]["containers"]
    assert env(video)["FACEGRID_VIDEO_API_TOKEN"]["secretKeyRef"]["name"] == "workers"


def test_the_ingress_routes_to_the_gateway() -> None:
    assert not named(render(), "Ingress")
    documents = render_values("monitoring")
    ingress = find(documents, "Ingress", "fg-gateway")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "faces-tls", "hosts": ["faces.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": "fg-gateway", "port": {"name": "http"}}
    service = find(documents, "Service", "fg-gateway")
    assert "http" in {p["name"] for p in service["spec"]["ports"]}


def test_clients_reach_every_extractor_pod_through_a_headless_service() -> None:
    documents = render()
    pods = find(documents, "Service", "fg-extractor-pods")
    assert pods["spec"]["clusterIP"] == "None"
    # Only gRPC: the monitors scrape each pod once, through fg-extractor's metrics port.
    assert [p["name"] for p in pods["spec"]["ports"]] == ["grpc"]
    deployment = find(documents, "Deployment", "fg-extractor")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pods["spec"]["selector"].items() <= labels.items()
    assert env(container(documents, "gateway"))["FACEGRID_GATEWAY_EXTRACTOR"] == (
        "fg-extractor-pods:18665"
    )


def test_monitors_scrape_ports_that_exist() -> None:
    documents = render_values("monitoring")
    services = [d for d in documents if d["kind"] == "Service"]
    for monitor in (d for d in documents if d["kind"] == "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services if selector.items() <= {**s["metadata"]["labels"]}.items()]
        ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports, monitor["metadata"]["name"]
    (pods,) = [d for d in documents if d["kind"] == "PodMonitor"]
    template = video_worker_template(documents)
    assert template is not None
    pod = template["deployment"]["spec"]["template"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] in ports


def _metric_names(tmp_path: Path) -> set[str]:
    """Every metric family FaceGrid exposes, as Prometheus names its series."""
    registry = CollectorRegistry()
    RequestMetrics("gateway", registry).observe("http", "GET /v1/faces", "200", 0.01)
    worker = WorkerMetrics(registry)
    worker.camera("cam")
    shard = Shard("shard-0", tmp_path)
    register_shard_metrics(shard, ReplicationState(), registry)
    names = set()
    for family in registry.collect():
        names |= {sample.name for sample in family.samples} | {family.name}
    shard.close()
    # The extractor's stage histogram is made inside its build(), once models are loaded.
    source = (ROOT / "extractor" / "main.py").read_text()
    (stage,) = re.findall(r'"(facegrid_extractor_\w+)"', source)
    return names | {f"{stage}_bucket", f"{stage}_sum", f"{stage}_count"}


def test_the_dashboard_uses_real_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((CHART / "dashboards" / "facegrid.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("request rate", "latency", "extraction", "faces per", "search", "frames", "drop"):
        assert topic in titles, topic
    used = {m for e in exprs for m in re.findall(r"\bfacegrid_\w+", e)}
    assert used - _metric_names(tmp_path) == set()
    assert {"facegrid_video_frames_dropped_total", "facegrid_indexer_vectors"} <= used


def test_the_dashboard_is_shipped_for_grafanas_sidecar() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")]
    configmap = find(render_values("monitoring"), "ConfigMap", "fg-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "FaceGrid"}
    shipped = json.loads(configmap["data"]["facegrid.json"])
    assert shipped == json.loads((CHART / "dashboards" / "facegrid.json").read_text())


def _commands(text: str) -> list[str]:
    return re.findall(r"facegrid token [^'\n]*", text)


@pytest.mark.parametrize("values", ["default", "external-db"])
def test_notes_say_how_to_get_a_token(values: str) -> None:
    path = CHART / "ci" / f"{values}-values.yaml"
    text = notes(*(("-f", str(path)) if path.exists() else ()))
    commands = _commands(text)
    assert len(commands) == 2
    gateway = env(container(render_values(values), "gateway"))
    for command in commands:
        # The variables the command reads exist in the gateway pod it runs in...
        for variable in re.findall(r"\$(FACEGRID_\w+)", text):
            assert variable in gateway, variable
        # ...and `facegrid token` accepts its options.
        argv = command.replace('"$FACEGRID_GATEWAY_MONGO_URI"', "mongodb://x").split()[1:]
        args = build_parser().parse_args(argv)
        assert args.mongo_uri == "mongodb://x"
    assert "deploy/fg-gateway" in text
    assert "create secret generic fg-video-token" in text


def test_the_ci_values_files_are_valid_values() -> None:
    """Each one changes what it says it does (a typo'd key would be refused by the schema, so
    this only guards that the files stay meaningful)."""
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        values = yaml.safe_load(path.read_text())
        assert isinstance(values, dict) and values, path.name


def test_follower_ranks_follow_the_primaries_pod_by_pod() -> None:
    documents = render("--set", "indexer.followers=2")
    for rank in (1, 2):
        follower = find(documents, "StatefulSet", f"fg-indexer-r{rank}")
        variables = env(follower["spec"]["template"]["spec"]["containers"][0])
        assert variables["FACEGRID_INDEXER_ROLE"] == "follower"
        # `{ordinal}` is filled in by the indexer from its pod name: pod i follows shard i.
        assert variables["FACEGRID_INDEXER_PRIMARY"] == "fg-indexer-{ordinal}.fg-indexer:33001"
        assert follower["spec"]["serviceName"] == f"fg-indexer-r{rank}"
        assert find(documents, "Service", f"fg-indexer-r{rank}")["spec"]["clusterIP"] == "None"
    assert env(container(documents, "operator"))["FACEGRID_OPERATOR_INDEXER_FOLLOWERS"] == "2"
    assert not [d for d in render() if d["metadata"]["name"].startswith("fg-indexer-r")]

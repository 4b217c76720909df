"""The chart's security posture, for every CI values file: the operator's RBAC is least
privilege, only the gateway is reachable from outside the release, every container runs as
non-root on a read-only root filesystem without capabilities, gRPC services are probed over
gRPC health, and disruption budgets cover the serving tiers.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from .chart import (
    NAMESPACE,
    VALUES,
    Document,
    containers,
    crds,
    find,
    pod_specs,
    render,
    render_values,
    video_worker_template,
    workloads,
)

# What the operator may do, rule by rule (apiGroup, resource) -> verbs. A new permission is a
# decision: add it here with the reason in operator-rbac.yaml.
NAMESPACED_RULES = {
    ("facegrid.io", "facegalleries"): {"get", "list", "watch", "patch", "update"},
    ("facegrid.io", "cameras"): {"get", "list", "watch", "patch", "update"},
    ("facegrid.io", "facegalleries/status"): {"get", "patch", "update"},
    ("facegrid.io", "cameras/status"): {"get", "patch", "update"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create"},
}
CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
}


def _rules(role: Document) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_the_operators_rbac_is_least_privilege() -> None:
    documents = render()
    role = find(documents, "Role", "fg-operator")
    (cluster_role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    for granted in (role, cluster_role):
        for rule in granted["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (granted["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    assert _rules(role) == NAMESPACED_RULES
    assert _rules(cluster_role) == CLUSTER_RULES


def test_the_operator_runs_as_its_service_account() -> None:
    documents = render()
    account = find(documents, "ServiceAccount", "fg-operator")
    for binding_kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        (binding,) = [d for d in documents if d["kind"] == binding_kind]
        assert binding["roleRef"]["kind"] == role_kind
        assert binding["roleRef"]["name"] in {
            d["metadata"]["name"] for d in documents if d["kind"] == role_kind
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
        ]
    # Cluster-wide names are unique per release namespace.
    (cluster_role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    assert NAMESPACE in cluster_role["metadata"]["name"]
    for owner, pod in pod_specs(documents):
        if owner == "fg-operator":
            assert pod["serviceAccountName"] == "fg-operator"
        else:  # no other pod talks to the API server
            assert pod["automountServiceAccountToken"] is False, owner


def test_kopfs_peering_crd_and_object() -> None:
    crd = crds()["kopf.dev/v1/KopfPeering"]
    kubernetes_validate.validate(
        {k: v for k, v in crd.items() if k != "_schema"}, "1.33.0", strict=True
    )
    assert crd["metadata"]["name"] == "kopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    # kopf patches status through the object itself: a status subresource would drop it.
    assert "subresources" not in version
    status = crd["_schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    peering = find(render(), "KopfPeering", "facegrid")
    alive = {"status": {"facegrid-operator-abc@pod": {"priority": 0, "lastseen": "2026-01-01"}}}
    jsonschema.Draft4Validator(crd["_schema"]).validate({**peering, **alive})


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
    return True


def _pod_labels(documents: list[Document]) -> dict[str, dict[str, str]]:
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in workloads(documents)
    }
    template = video_worker_template(documents)
    if template is not None:
        pod = template["deployment"]["spec"]["template"]["metadata"]["labels"]
        labels["video-worker template"] = {**pod, "facegrid.io/pool": "any"}
    return labels


@pytest.mark.parametrize("values", [v for v in VALUES if v != "minimal"])
def test_only_the_gateway_is_reachable_from_outside(values: str) -> None:
    documents = render_values(values)
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    pods = _pod_labels(documents)
    for name, labels in pods.items():
        applying = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        assert applying, f"{name}: no NetworkPolicy selects it, so it accepts anything"
        assert all("Ingress" in p["spec"]["policyTypes"] for p in applying)
        for policy in applying:
            for rule in policy["spec"].get("ingress", []):
                sources = rule.get("from")
                ports = {p["port"] for p in rule.get("ports", [])}
                if not sources:  # from anywhere: the gateway's API port only
                    assert labels["app.kubernetes.io/component"] == "gateway", name
                    assert ports == {"http"}, name
                    continue
                for source in sources:
                    if "namespaceSelector" in source or "ipBlock" in source:
                        assert ports == {"metrics"}, (name, rule)  # Prometheus scraping
                    else:  # pods of this namespace: this release's only
                        selector = source["podSelector"]["matchLabels"]
                        assert selector == {
                            "app.kubernetes.io/name": "facegrid",
                            "app.kubernetes.io/instance": "fg",
                        }, (name, rule)


def test_network_policies_can_be_switched_off() -> None:
    assert not [d for d in render_values("minimal") if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("values", VALUES)
def test_every_container_is_unprivileged(values: str) -> None:
    documents = render_values(values, "--set", "extractor.models.build=true")
    for owner, pod in pod_specs(documents):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, owner
        assert context["runAsUser"] > 0, owner
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        assert "hostNetwork" not in pod and "hostPID" not in pod, owner
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, (owner, container["name"])
            assert security["readOnlyRootFilesystem"] is True, (owner, container["name"])
            assert security["allowPrivilegeEscalation"] is False, (owner, container["name"])
            assert security["capabilities"] == {"drop": ["ALL"]}, (owner, container["name"])
            assert "privileged" not in security
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, owner


def test_facegrid_pods_run_as_the_images_user() -> None:
    for owner, pod in pod_specs(render()):
        if owner in ("fg-mongo", "fg-redis"):
            assert pod["securityContext"]["runAsUser"] == 999  # the official images' users
        else:
            assert pod["securityContext"]["runAsUser"] == 10001, owner
            (first, *_) = pod["containers"]
            mounts = {m["mountPath"] for m in first["volumeMounts"]}
            assert "/tmp" in mounts, owner  # writable scratch on a read-only root


def test_grpc_services_are_probed_over_grpc() -> None:
    documents = render(*("--set", "operator.enabled=false"))
    documents += render()
    probed = set()
    for owner, container in containers(documents):
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "grpc" not in ports:
            continue
        assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"], owner
        if container["name"] == "operator":
            # A standby replica (kopf peering) is alive but not serving: not restarted.
            assert container["livenessProbe"]["tcpSocket"]["port"] == "grpc"
        else:
            assert container["livenessProbe"]["grpc"]["port"] == ports["grpc"], owner
        probed.add(container["name"])
    assert probed == {"extractor", "indexer", "licensing", "controlplane", "operator"}


@pytest.mark.parametrize("component", ["gateway", "extractor", "indexer"])
def test_disruption_budgets_cover_the_serving_tiers(component: str) -> None:
    documents = render()
    budget = find(documents, "PodDisruptionBudget", f"fg-{component}")
    assert budget["spec"]["maxUnavailable"] == 1
    (workload,) = [d for d in workloads(documents) if d["metadata"]["name"] == f"fg-{component}"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert _selects(budget["spec"]["selector"], labels)

"""The few Kubernetes API calls the operator makes itself (kopf makes the watching ones).

The official `kubernetes` client is synchronous: each call runs in a worker thread. Errors come
back as the control plane's own exceptions, so the gRPC servicer maps them like the local ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from facegrid.operator.core.placement import AlreadyExists, InvalidRequest, NotFound, Unavailable
from facegrid.operator.core.resources import GROUP, VERSION


def _translate(e: ApiException) -> Exception:
    detail = f"Kubernetes API: {e.status} {e.reason}"
    if e.status == 404:
        return NotFound(detail)
    if e.status == 409:
        return AlreadyExists(detail)
    if e.status in (400, 422):
        return InvalidRequest(f"{detail}: {e.body}")
    return Unavailable(detail)


class KubeApi:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._custom = client.CustomObjectsApi(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._client = api_client

    async def _run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(functools.partial(call, *args, **kwargs))
        except ApiException as e:
            raise _translate(e) from e

    async def _raw(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The answer as plain JSON: the client's typed models are skipped (they insist on
        fields the operator never reads)."""
        response = await self._run(call, *args, _preload_content=False, **kwargs)
        data = response.data
        return dict(json.loads(data)) if data else {}

    # -- custom resources -----------------------------------------------------------------------

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._raw(
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            body,
        )

    async def list_all(self, plural: str) -> list[dict[str, Any]]:
        listed = await self._raw(
            self._custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, plural
        )
        return list(listed.get("items", []))

    async def get(self, plural: str, name: str) -> dict[str, Any]:
        return await self._raw(
            self._custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, plural, name
        )

    async def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._raw(
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
            patch,
        )

    async def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self._raw(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
            {"status": status},
        )

    async def delete(self, plural: str, name: str) -> None:
        await self._raw(
            self._custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
        )

    # -- workloads ------------------------------------------------------------------------------

    async def statefulset_replicas(self, name: str) -> int:
        sts = await self._raw(self._apps.read_namespaced_stateful_set, name, self.namespace)
        return int(sts.get("spec", {}).get("replicas") or 0)

    async def scale_statefulset(self, name: str, replicas: int) -> None:
        await self._raw(
            self._apps.patch_namespaced_stateful_set,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )

    async def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._raw(self._apps.read_namespaced_deployment, name, self.namespace)
        except NotFound:
            return None

    async def create_deployment(self, body: dict[str, Any]) -> None:
        await self._raw(self._apps.create_namespaced_deployment, self.namespace, body)

    async def patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        await self._raw(self._apps.patch_namespaced_deployment, name, self.namespace, patch)

    async def delete_deployment(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._raw(self._apps.delete_namespaced_deployment, name, self.namespace)

    async def pods(self, label: str, value: str) -> list[dict[str, Any]]:
        """Pods labelled label=value (filtered here too: not every API server stand-in does)."""
        listed = await self._raw(
            self._core.list_namespaced_pod, self.namespace, label_selector=f"{label}={value}"
        )
        return [
            p
            for p in listed.get("items", [])
            if ((p.get("metadata") or {}).get("labels") or {}).get(label) == value
        ]

"""An in-memory Kubernetes API server for the operator's tests: kmock, with its gaps filled.

No real API server can run on these machines (no container engine, no kube-apiserver in any
package registry we reach), so the operator is tested against kmock, the in-memory API server
made by kopf's author for this purpose. kmock 0.8 leaves out what a real server adds to every
object and fails on one path kopf calls; this subclass supplies exactly that, nothing more:

- the name from generateName (kopf's events), namespace (from the URL), uid, resourceVersion
  (bumped on every change), generation (bumped when spec changes) and creationTimestamp, which
  kopf and the `kubernetes` client rely on;
- `GET /api/v1/namespaces` (list and watch), which kmock's path parser cannot take.

And it drops the resourceVersion `test` from JSON patches (kopf's finalizer edits): kmock
answers a failed test with 500 and sends no event after it, so kopf would retry on a next
cycle that never comes. Optimistic concurrency on finalizers is therefore not exercised here.

Label selectors are ignored by kmock (every object comes back): the operator filters itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from typing import Any

import aiohttp.web
import kmock

NAMESPACE = "facegrid"

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "facegrid.io/v1/facegalleries": kmock.ResourceInfo(
        kind="FaceGallery", namespaced=True, subresources={"status"}, categories={"facegrid"}
    ),
    "facegrid.io/v1/cameras": kmock.ResourceInfo(
        kind="Camera", namespaced=True, subresources={"status"}, categories={"facegrid"}
    ),
    "apps/v1/statefulsets": kmock.ResourceInfo(kind="StatefulSet", namespaced=True),
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", namespaced=True),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the object metadata and the namespace listing a real server has."""

    _versions = itertools.count(1)

    def declare(self) -> None:
        for key, info in RESOURCES.items():
            info.verbs = set(VERBS)
            self.resources[key] = info

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, list):
            # A JSON patch (kopf's, for finalizers). Its resourceVersion `test` is dropped:
            # kmock emits no event after a refused patch, so kopf would wait for a next cycle
            # that never comes (a real server's watch would deliver the newer change).
            request.data[:] = [
                op
                for op in request.data
                if not (op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion")
            ]
            request.data.append(
                {
                    "op": "replace",
                    "path": "/metadata/resourceVersion",
                    "value": str(next(self._versions)),
                }
            )
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault(
                    "creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
                meta["resourceVersion"] = str(next(self._versions))
            elif request.action == kmock.action.UPDATE:
                meta["resourceVersion"] = str(next(self._versions))
                if "spec" in request.data and not request.subresource:
                    key = (request.resource, request.namespace, request.name)
                    if key in self.objects:
                        current = self.objects[key].get("metadata", {}).get("generation", 1)
                        meta["generation"] = int(current) + 1
        return await super()._handle(request)

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.path == "/api/v1/namespaces":
            if raw.query.get("watch") in ("true", "1"):
                response = aiohttp.web.StreamResponse()
                await response.prepare(raw)
                await asyncio.sleep(float(raw.query.get("timeoutSeconds", "60")))
                return response
            items: list[dict[str, Any]] = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                for n in ("default", NAMESPACE)
            ]
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": items}
            )
        return await super().__call__(raw)

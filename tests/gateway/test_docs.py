"""API docs: without a token, per version, with no asset fetched from outside."""

from __future__ import annotations

import httpx


async def test_docs_list_versions_and_serve_each_offline(api: httpx.AsyncClient) -> None:
    anonymous = {"Authorization": ""}
    listing = await api.get("/v1/docs", headers=anonymous)
    assert listing.status_code == 200
    assert listing.json()["versions"] == {"v0": "/v0/docs/v0", "v1": "/v1/docs/v1"}

    page = await api.get("/v1/docs/v1", headers=anonymous)
    assert page.status_code == 200
    # Where the seed's installer sends its users.
    overview = await api.get("/v1/docs/v1/overview.html", headers=anonymous)
    assert overview.status_code == 200 and overview.text == page.text
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    script = await api.get("/docs-assets/swagger-ui-bundle.js", headers=anonymous)
    assert script.status_code == 200 and len(script.content) > 100_000

    spec = (await api.get("/docs/v0/openapi.json", headers=anonymous)).json()
    assert spec["paths"] and all(path.startswith("/v0/") for path in spec["paths"])
    for method in ("/v0/detect", "/v0/verify", "/v0/identify", "/v0/face", "/v0/faces"):
        assert method in spec["paths"]

    missing = await api.get("/v1/docs/v9", headers=anonymous)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"

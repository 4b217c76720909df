"""The seed's shard HTTP API, in the reference's shapes, over a real shard."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from facegrid.confidence import confidence_of
from facegrid.indexer.core import Shard
from facegrid.indexer.core.gallery import HnswParams
from facegrid.indexer.http_api import create_app
from facegrid.indexer.replica import FOLLOWER, ReplicationState


@pytest.fixture
def state() -> ReplicationState:
    return ReplicationState()


@pytest.fixture
async def client(tmp_path: Path, state: ReplicationState) -> AsyncIterator[httpx.AsyncClient]:
    shard = Shard("s", tmp_path, HnswParams(graph_min=50))
    transport = httpx.ASGITransport(app=create_app(shard, state))
    async with httpx.AsyncClient(transport=transport, base_url="http://shard") as http:
        yield http
    shard.close()


def _facen(rng: np.random.Generator) -> np.ndarray:
    return (rng.normal(size=128) * 0.1).astype("<f4")


async def test_add_get_delete_as_the_seed_answers(client: httpx.AsyncClient) -> None:
    vector = _facen(np.random.default_rng(1))
    added = await client.post("/v1/my_gal/add/1234", content=vector.tobytes())
    assert (added.status_code, added.content) == (200, b"")
    again = await client.post("/v1/my_gal/add/1234", content=vector.tobytes())
    assert again.status_code == 409

    got = await client.get("/v1/my_gal/get/1234")
    assert got.status_code == 200
    assert got.json()["id"] == 1234
    assert base64.b64decode(got.json()["facen"]) == vector.tobytes()
    assert (await client.get("/v1/my_gal/get/99")).status_code == 404

    assert (await client.delete("/v1/my_gal/del/1234")).status_code == 200
    assert (await client.delete("/v1/my_gal/del/1234")).status_code == 404
    assert (await client.get("/v1/my_gal/get/1234")).status_code == 404


async def test_search_reports_confidence_and_whether_the_index_was_used(
    client: httpx.AsyncClient,
) -> None:
    rng = np.random.default_rng(2)
    vectors = [_facen(rng) for _ in range(120)]
    for face_id, vector in enumerate(vectors, start=1):
        assert (await client.post(f"/v1/g/add/{face_id}", content=vector.tobytes())).is_success

    found = await client.post("/v1/g/search/1/0.65?linear_search=1", content=vectors[6].tobytes())
    assert found.status_code == 200
    assert found.headers["X-search-stat"] == "without_index"
    assert found.json() == [{"conf": 1.0, "id": 7}]

    # A threshold cuts the far faces: random vectors are far from each other.
    near = vectors[6] + 0.01
    hits = (await client.post("/v1/g/search/5/0.75", content=near.tobytes())).json()
    assert [h["id"] for h in hits] == [7]
    expected = confidence_of(float(np.linalg.norm(near - vectors[6])))
    assert hits[0]["conf"] == pytest.approx(expected, abs=1e-5)
    everything = (await client.post("/v1/g/search/5/0", content=near.tobytes())).json()
    assert len(everything) == 5
    assert [h["conf"] for h in everything] == sorted((h["conf"] for h in everything), reverse=True)


async def test_list_pages_through_faces_with_their_space(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(3)
    for face_id in (5, 10, 15, 20, 25):
        await client.post(f"/v1/g/add/{face_id}", content=_facen(rng).tobytes())
    first = (await client.get("/v1/g/list/0/2")).json()
    assert [f["id"] for f in first["faces"]] == [5, 10]
    assert first["next"] == 15
    assert {f["space"] for f in first["faces"]} == {"linear"}
    assert len(base64.b64decode(first["faces"][0]["facen"])) == 512
    last = (await client.get(f"/v1/g/list/{first['next']}/10")).json()
    assert [f["id"] for f in last["faces"]] == [15, 20, 25]
    assert "next" not in last
    assert (await client.get("/v1/nope/list/0/10")).status_code == 404


async def test_stat_list_and_info(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(4)
    for face_id in range(1, 4):
        await client.post(f"/v1/a/add/{face_id}", content=_facen(rng).tobytes())
    await client.post("/v1/b/add/1", content=_facen(rng).tobytes())

    listing = (await client.get("/stat/list/1/99")).json()
    assert listing["total"] == 2
    assert [(g["id"], g["name"], g["cnt_linear"]) for g in listing["galleries"]] == [
        (1, "a", 3),
        (2, "b", 1),
    ]
    assert (await client.get("/stat/list/2/99")).json()["galleries"][0]["name"] == "b"

    info = (await client.get("/stat/info/a")).json()
    assert info["name"] == "a"
    assert (info["cnt_linear"], info["cnt_indexed"], info["index_loaded"]) == (3, 0, False)
    assert {"cnt_preindex", "cnt_indexed_deleted", "cnt_preindex_deleted", "index_file"} <= set(
        info
    )
    assert (await client.get("/stat/info/zzz")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/g/add/1", b"abc", 400),  # not float32s
        ("POST", "/v1/g/add/1", b"", 400),
        ("POST", "/v1/g/add/x", b"\0" * 512, 400),
        ("POST", "/v1/g/add/1", np.full(128, np.nan, "<f4").tobytes(), 400),
        ("POST", "/v1/g/search/0/0.5", b"\0" * 512, 400),
        ("POST", "/v1/g/search/1/1.5", b"\0" * 512, 400),
        ("POST", "/v1/g/search/1/high", b"\0" * 512, 400),
        ("GET", "/v1/g/list/0/0", b"", 400),
        ("GET", "/stat/list/0/10", b"", 400),
    ],
)
async def test_bad_requests_get_400_and_change_nothing(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, status: int
) -> None:
    response = await client.request(method, path, content=body)
    assert response.status_code == status
    assert response.text  # the reason, in plain text
    assert (await client.get("/stat/list/1/10")).json()["total"] == 0


async def test_a_wrong_vector_size_is_refused(client: httpx.AsyncClient) -> None:
    await client.post("/v1/g/add/1", content=np.zeros(128, "<f4").tobytes())
    response = await client.post("/v1/g/add/2", content=np.zeros(64, "<f4").tobytes())
    assert response.status_code == 400
    assert "128" in response.text


async def test_a_follower_refuses_writes(
    client: httpx.AsyncClient, state: ReplicationState
) -> None:
    state.role, state.primary = FOLLOWER, "10.0.0.1:33001"
    response = await client.post("/v1/g/add/1", content=np.zeros(128, "<f4").tobytes())
    assert response.status_code == 403
    assert "10.0.0.1:33001" in response.text

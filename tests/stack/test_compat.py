"""The reference manual's request examples, replayed against a running `facegrid up`.

Every example of the manual's REST API chapter (and its "Test Requests" and "Advanced
Features" examples) is sent as the manual writes it, with photos from shared/data/faces served
by a local HTTP server in place of static.findface.pro (these machines cannot reach it; the
gateway is told to allow loopback photo URLs for that reason). Each response is checked field by
field against what the manual documents: names, types and shapes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from facegrid.stack import SHARD_PORT

from .conftest import RunningStack, stack_with_models

CAM = "0c1a8d52-5f0e-4b8e-9d1b-000000000001"
BOX = {"x1": int, "x2": int, "y1": int, "y2": int}
FACE = {
    "id": int,
    "meta": str,
    "galleries": list,
    "photo": str,
    "photo_hash": str,
    "timestamp": str,
    **BOX,
}


def _shape(value: dict[str, Any], fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        assert name in value, f"{name} missing from {value}"
        assert isinstance(value[name], kind), f"{name}={value[name]!r} is not {kind.__name__}"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, model_bundle: Path
) -> Iterator[tuple[RunningStack, int]]:
    with stack_with_models(
        tmp_path_factory.mktemp("compat"),
        model_bundle,
        {
            "FACEGRID_GATEWAY_FETCH_ALLOW": "127.0.0.0/8",
            "FACEGRID_GATEWAY_PERSON_IDENTIFY": "true",
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: tuple[RunningStack, int]) -> Iterator[httpx.Client]:
    running, _ = stack
    with httpx.Client(
        base_url=running.api,
        headers={"Authorization": f"Token {running.token}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def urls(photo_server: str) -> dict[str, str]:
    examples = f"{photo_server}/face_recognition/examples"
    return {
        "sample": f"{examples}/obama.jpg",
        "sample2": f"{examples}/obama2.jpg",
        "other": f"{examples}/biden.jpg",
        "multiface": f"{photo_server}/facenet-pytorch/data/multiface.jpg",
    }


def test_detect(api: httpx.Client, urls: dict[str, str]) -> None:
    response = api.post("/v0/detect/", json={"photo": urls["other"]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    (face,) = response.json()["faces"]
    _shape(face, BOX)
    assert response.json()["orientation"] == 1


def test_verify(api: httpx.Client, urls: dict[str, str]) -> None:
    body = api.post("/v0/verify/", json={"photo1": urls["sample"], "photo2": urls["sample2"]})
    result = body.json()
    assert result["verified"] is True
    (pair,) = result["results"]
    _shape(pair, {"bbox1": dict, "bbox2": dict, "confidence": float, "verified": bool})
    _shape(pair["bbox1"], BOX)
    _shape(pair["bbox2"], BOX)


def test_face_identify_and_face_methods(api: httpx.Client, urls: dict[str, str]) -> None:
    for gallery in ("gal1", "niceppl"):
        assert api.post(f"/v0/galleries/{gallery}").status_code == 201
    added = api.post(
        "/v0/face/",
        json={"meta": "Sam Berry", "photo": urls["sample"], "galleries": ["gal1", "niceppl"]},
    )
    assert added.status_code == 200
    (face,) = added.json()["results"]
    _shape(face, FACE)
    assert face["galleries"] == ["default", "gal1", "niceppl"]
    assert face["photo"] == urls["sample"] and len(face["photo_hash"]) == 32

    found = api.post("/v0/identify/", json={"n": 10, "photo": urls["sample2"]})
    assert found.headers["X-Live-Servers"] == "1/1"
    results = found.json()["results"]
    ((key, matches),) = results.items()
    assert key.startswith("[") and len(key.strip("[]").split(", ")) == 4
    _shape(matches[0], {"confidence": float, "face": dict})
    _shape(matches[0]["face"], FACE)
    assert matches[0]["face"]["id"] == face["id"]

    # The Test Requests chapter: multipart with the photo given as a URL field.
    form = api.post("/v0/identify", files={"photo": (None, urls["sample2"])})
    assert next(iter(form.json()["results"].values()))[0]["face"]["id"] == face["id"]

    got = api.get(f"/v0/face/id/{face['id']}/").json()
    _shape(got, FACE)
    changed = api.put(f"/v0/face/id/{face['id']}/", json={"meta": "Sam Berry #2"}).json()
    assert changed["meta"] == "Sam Berry #2"
    by_meta = api.get("/v0/face/meta/Sam%20Berry%20%232/").json()["results"]
    assert [f["id"] for f in by_meta] == [face["id"]]
    # A meta with a slash, URL-encoded, through the real HTTP server (it decodes %2F).
    api.put(f"/v0/face/id/{face['id']}/", json={"meta": "photos/Sam Berry"})
    by_path = api.get("/v0/face/meta/photos%2FSam%20Berry/").json()["results"]
    assert [f["id"] for f in by_path] == [face["id"]]
    api.put(f"/v0/face/id/{face['id']}/", json={"meta": "Sam Berry #2"})
    listing = api.get("/v0/faces/").json()
    assert face["id"] in [f["id"] for f in listing["results"]]
    metas = api.get("/v0/meta/").json()["results"]
    entry = next(m for m in metas if m["meta"] == "Sam Berry #2")
    _shape(entry, {"count": int, "face": dict, "meta": str})

    galleries = api.get("/v0/galleries/").json()["results"]
    assert {"default", "gal1", "niceppl"} <= set(galleries)
    # "Deletes the gallery and all faces in it."
    assert api.delete("/v0/galleries/niceppl").status_code == 204
    assert api.get(f"/v0/face/id/{face['id']}/").status_code == 404
    assert api.delete(f"/v0/face/id/{face['id']}/").status_code == 404


def test_too_many_faces(api: httpx.Client, urls: dict[str, str]) -> None:
    response = api.post("/v0/face/", json={"mf_selector": "reject", "photo": urls["multiface"]})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert body["reason"] == f"Too many faces: {len(body['faces'])}"
    assert len(body["faces"]) > 1
    for box in body["faces"]:
        _shape(box, BOX)


def test_gender_age_emotions(api: httpx.Client, urls: dict[str, str]) -> None:
    detected = api.post(
        "/v1/detect/",
        json={"photo": urls["other"], "emotions": True, "gender": True, "age": True},
    ).json()
    (face,) = detected["faces"]
    _shape(face, {**BOX, "age": int, "emotions": list, "gender": str})
    assert all(isinstance(e, str) for e in face["emotions"])
    added = api.post(
        "/v1/face/",
        json={
            "meta": "Jane Berry",
            "photo": urls["other"],
            "emotions": True,
            "gender": True,
            "age": True,
        },
    ).json()
    _shape(added["results"][0], {**FACE, "age": int, "emotions": list, "gender": str})


def test_persons_and_history(api: httpx.Client, urls: dict[str, str]) -> None:
    first = api.post("/v0/face/", json={"photo": urls["sample"], "cam_id": CAM}).json()
    second = api.post("/v0/face/", json={"photo": urls["sample2"], "cam_id": CAM}).json()
    (a,), (b,) = first["results"], second["results"]
    _shape(a, {**FACE, "person_id": int, "friend": bool})
    assert a["person_id"] == b["person_id"]

    searched = api.post("/v0/history/search", json={"limit": 1}).json()
    assert "next_page" in searched
    (event,) = searched["results"]
    _shape(
        event,
        {
            "friend": bool,
            "meta": str,
            "photo_hash": str,
            "cam_id": str,
            "person_id": int,
            "timestamp": str,
            "photo": str,
            "id": int,
            **BOX,
        },
    )
    history = api.request(
        "GET",
        f"/v0/person/history/id/{a['person_id']}",
        json={"cam_ids": [CAM], "start": "2016-06-13T11:00:00.000000"},
    ).json()["results"]
    assert {e["face_id"] for e in history} == {a["id"], b["id"]}
    _shape(
        history[0],
        {
            "person_id": int,
            "face_id": int,
            "cam_id": str,
            "meta": str,
            "screenshot": str,
            "timestamp": str,
        },
    )
    persons = api.get("/v0/persons").json()["results"]
    _shape(persons[0], {"id": int, "meta": str})
    moved = api.put(f"/v0/face/id/{a['id']}/", json={"person_id": "4"}).json()
    assert moved["person_id"] == 4


def test_cameras(api: httpx.Client) -> None:
    created = api.post(
        "/v0/camera/",
        json={"meta": "test", "url": "http://test.com:1234/stream.flv", "detector": "detec1"},
    )
    assert created.status_code == 201
    camera = created.json()
    _shape(camera, {"meta": str, "url": str, "detector": str, "id": str})
    listed = api.get("/v0/camera").json()
    assert isinstance(listed, list) and camera["id"] in [c["id"] for c in listed]
    assert api.get(f"/v0/camera/{camera['id']}").json()["url"] == camera["url"]
    one = api.put(
        f"/v0/camera/{camera['id']}",
        json={"meta": "newinfo", "url": "http://zzzz.com:1234/stream.flv"},
    ).json()
    assert (one["meta"], one["url"]) == ("newinfo", "http://zzzz.com:1234/stream.flv")
    two = api.put(
        f"/v0/camera/{camera['id']}", json={"rot": [120, 120, 35, 50], "roi": [100, 100, 40, 50]}
    ).json()
    assert (two["rot"], two["roi"]) == ([120, 120, 35, 50], [100, 100, 40, 50])
    assert api.delete(f"/v0/camera/{camera['id']}").status_code == 204


def test_errors_and_docs(api: httpx.Client, stack: tuple[RunningStack, int]) -> None:
    running, _ = stack
    anonymous = httpx.get(f"{running.api}/v0/galleries/", timeout=10)
    assert anonymous.status_code == 401
    _shape(anonymous.json(), {"code": str, "reason": str})
    assert anonymous.json()["code"] == "AUTH_FAILED"
    bad = api.post("/v0/identify/", json={"photo": "not a url", "threshold": "loose"})
    assert bad.status_code == 400
    _shape(bad.json(), {"code": str, "reason": str, "param": str})
    malformed = api.post("/v0/detect/", content=b"{", headers={"Content-Type": "application/json"})
    assert malformed.json()["code"] == "MALFORMED_JSON"
    assert httpx.get(f"{running.api}/v1/docs", timeout=10).status_code == 200
    assert httpx.get(f"{running.api}/v1/docs/v1", timeout=10).status_code == 200


def test_shard_http_api(stack: tuple[RunningStack, int]) -> None:
    """The manual's "Direct API Requests to Tarantool" examples, on shard 0's HTTP port."""
    _, base = stack
    shard = f"http://127.0.0.1:{base + SHARD_PORT + 2}"
    facen = np.random.default_rng(1).normal(size=128).astype("<f4").tobytes()
    added = httpx.post(f"{shard}/v1/my_gal/add/1234", content=facen, timeout=10)
    assert (added.status_code, added.content) == (200, b"")
    assert httpx.post(f"{shard}/v1/my_gal/add/1234", content=facen, timeout=10).status_code == 409
    got = httpx.get(f"{shard}/v1/my_gal/get/1234", timeout=10).json()
    assert got["id"] == 1234 and base64.b64decode(got["facen"]) == facen
    found = httpx.post(
        f"{shard}/v1/my_gal/search/1/0.65?linear_search=1", content=facen, timeout=10
    )
    assert found.headers["X-search-stat"] == "without_index"
    assert found.json() == [{"conf": 1.0, "id": 1234}]
    listed = httpx.get(f"{shard}/v1/my_gal/list/0/1", timeout=10).json()
    assert listed["faces"][0]["id"] == 1234 and listed["faces"][0]["space"] == "linear"
    stat = httpx.get(f"{shard}/stat/list/1/99", timeout=10).json()
    assert "my_gal" in [g["name"] for g in stat["galleries"]]
    info = httpx.get(f"{shard}/stat/info/my_gal", timeout=10).json()
    _shape(info, {"cnt_indexed": int, "cnt_linear": int, "index_loaded": bool, "name": str})
    assert httpx.delete(f"{shard}/v1/my_gal/del/1234", timeout=10).status_code == 200

"""/detect, /verify, /identify, /face and /faces over real backends, with real photos."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from facegrid.gateway.app import Backends, create_app
from facegrid.gateway.shards import ShardRouter
from tests.conftest import FACES

EXAMPLES = FACES / "face_recognition" / "examples"
OBAMA = (EXAMPLES / "obama.jpg").read_bytes()
OBAMA2 = (EXAMPLES / "obama2.jpg").read_bytes()
BIDEN = (EXAMPLES / "biden.jpg").read_bytes()
TWO_PEOPLE = (EXAMPLES / "two_people.jpg").read_bytes()


def _box_keys(body: dict[str, object]) -> set[str]:
    return {k for k in body if k in ("x1", "y1", "x2", "y2")}


async def _enroll(api: httpx.AsyncClient, photo: bytes, **fields: str) -> dict[str, object]:
    response = await api.post("/v0/face", files={"photo": ("p.jpg", photo)}, data=fields)
    assert response.status_code == 200, response.text
    (face,) = response.json()["results"]
    return dict(face)


async def test_enroll_then_identify_the_same_person_on_another_photo(
    api: httpx.AsyncClient,
) -> None:
    face = await _enroll(api, OBAMA, meta="Barack Obama")
    assert face["meta"] == "Barack Obama"
    assert face["galleries"] == ["default"]
    assert face["photo_hash"] == hashlib.md5(OBAMA).hexdigest()
    assert _box_keys(face) == {"x1", "y1", "x2", "y2"}
    await _enroll(api, BIDEN, meta="Joe Biden")

    found = await api.post("/v1/identify", files={"photo": ("q.jpg", OBAMA2)}, data={"n": "2"})
    assert found.status_code == 200
    assert found.headers["X-Live-Servers"] == "1/1"
    # Where the time went: the backends waited on, and the gateway's own share.
    timing = dict(
        part.split(";dur=") for part in found.headers["Server-Timing"].replace(" ", "").split(",")
    )
    assert {"extract", "search", "db", "gateway", "total"} <= set(timing)
    assert float(timing["extract"]) > 0 and float(timing["gateway"]) >= 0
    (matches,) = found.json()["results"].values()
    assert matches[0]["face"]["id"] == face["id"]
    assert matches[0]["confidence"] >= 0.75
    assert len(matches) == 1  # Biden is far below the default threshold

    anyone = await api.post(
        "/v1/identify", files={"photo": ("q.jpg", OBAMA2)}, data={"n": "2", "threshold": "none"}
    )
    (matches,) = anyone.json()["results"].values()
    assert [m["face"]["meta"] for m in matches] == ["Barack Obama", "Joe Biden"]
    # Results are keyed by the query face's box as "[x1, y1, x2, y2]".
    detected = await api.post("/v0/detect", files={"photo": ("q.jpg", OBAMA2)})
    box = max(detected.json()["faces"], key=lambda b: (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]))
    key = next(iter(anyone.json()["results"]))
    assert json.loads(key) == [box["x1"], box["y1"], box["x2"], box["y2"]]


async def test_stored_face_media_is_served(api: httpx.AsyncClient) -> None:
    face = await _enroll(api, OBAMA)
    assert face["photo"].startswith("http://facegrid/media/")
    photo = await api.get(face["photo"], headers={"Authorization": ""})
    assert photo.status_code == 200 and photo.content == OBAMA
    chip = await api.get(face["normalized"])
    assert chip.headers["content-type"] == "image/png"
    assert chip.content.startswith(b"\x89PNG")
    assert (await api.get("/media/nothing.jpg")).status_code == 404


async def test_photo_urls_are_built_on_the_public_url_when_it_is_set(
    backends: Backends, token: str
) -> None:
    # Behind a TLS proxy the request arrives as plain http to an inner name; clients must get
    # links they can reach (the seed's ffupload_url).
    backends.faces.public_url = "https://faces.example.com"
    transport = httpx.ASGITransport(app=create_app(backends))
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway-0.internal", headers=headers
    ) as inner:
        face = await _enroll(inner, OBAMA)
        assert face["photo"].startswith("https://faces.example.com/media/")
        assert face["normalized"].startswith("https://faces.example.com/media/")
        path = face["photo"].removeprefix("https://faces.example.com")
        assert (await inner.get(path)).content == OBAMA


async def test_verify_same_and_different_people(api: httpx.AsyncClient) -> None:
    same = await api.post(
        "/v0/verify",
        files={"photo1": ("a.jpg", OBAMA), "photo2": ("b.jpg", OBAMA2)},
    )
    body = same.json()
    assert body["verified"] is True
    (pair,) = body["results"]
    assert pair["verified"] is True and pair["confidence"] > 0.75
    assert _box_keys(pair["bbox1"]) == {"x1", "y1", "x2", "y2"}

    different = await api.post(
        "/v0/verify",
        files={"photo1": ("a.jpg", OBAMA), "photo2": ("b.jpg", BIDEN)},
        data={"threshold": "low"},
    )
    assert different.json()["verified"] is False

    scores = await api.post(
        "/v0/verify",
        files={"photo1": ("a.jpg", OBAMA), "photo2": ("b.jpg", BIDEN)},
        data={"threshold": "none"},
    )
    assert "verified" not in scores.json()
    assert "verified" not in scores.json()["results"][0]


async def test_detect_with_and_without_attributes(api: httpx.AsyncClient) -> None:
    plain = await api.post("/v0/detect", files={"photo": ("p.jpg", TWO_PEOPLE)})
    assert plain.status_code == 200
    faces = plain.json()["faces"]
    assert len(faces) == 2
    assert all(set(f) == {"x1", "y1", "x2", "y2"} for f in faces)
    assert plain.json()["orientation"] == 1

    ignored = await api.post(
        "/v0/detect", files={"photo": ("p.jpg", BIDEN)}, data={"gender": "true"}
    )
    assert set(ignored.json()["faces"][0]) == {"x1", "y1", "x2", "y2"}  # v0 has no attributes

    rich = await api.post(
        "/v1/detect",
        files={"photo": ("p.jpg", BIDEN)},
        data={"gender": "true", "age": "true", "emotions": "true"},
    )
    (face,) = rich.json()["faces"]
    assert face["gender"] == "male"
    assert 20 <= face["age"] <= 80
    assert isinstance(face["emotions"], list) and face["emotions"]


async def test_the_gae_setting_off_ignores_the_attribute_flags(
    backends: Backends, token: str
) -> None:
    # The seed's facenapi `gae = False`.
    off = create_app(dataclasses.replace(backends, gae=False))
    headers = {"Authorization": f"Token {token}"}
    transport = httpx.ASGITransport(app=off)
    async with httpx.AsyncClient(transport=transport, base_url="http://f", headers=headers) as api:
        asked = {"gender": "true", "age": "true", "emotions": "true"}
        detected = await api.post("/v1/detect", files={"photo": ("p.jpg", BIDEN)}, data=asked)
        assert detected.status_code == 200
        assert set(detected.json()["faces"][0]) == {"x1", "y1", "x2", "y2"}
        added = await api.post("/v1/face", files={"photo": ("p.jpg", BIDEN)}, data=asked)
        assert not {"gender", "age", "emotions"} & set(added.json()["results"][0])


async def test_stored_attributes_show_in_both_versions(api: httpx.AsyncClient) -> None:
    asked = {"gender": "true", "age": "true", "emotions": "true", "meta": "gae"}
    added = await api.post("/v1/face", files={"photo": ("p.jpg", BIDEN)}, data=asked)
    assert added.status_code == 200, added.text
    (face,) = added.json()["results"]
    assert face["gender"] == "male"
    plain = await _enroll(api, OBAMA, meta="plain")  # v0 stores no attributes
    assert not {"gender", "age", "emotions"} & set(plain)
    for version in ("v0", "v1"):
        got = (await api.get(f"/{version}/face/id/{face['id']}")).json()
        assert (got["gender"], got["age"], got["emotions"]) == (
            face["gender"],
            face["age"],
            face["emotions"],
        )
        (listed,) = (await api.get(f"/{version}/face/meta/gae")).json()["results"]
        assert listed["gender"] == "male"


async def test_detect_reports_the_exif_orientation_and_boxes_on_the_upright_photo(
    api: httpx.AsyncClient,
) -> None:
    # Biden's photo as a camera held sideways stores it: pixels turned, EXIF orientation 6.
    upright = Image.open(io.BytesIO(BIDEN))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(stored, "JPEG", quality=95, exif=exif)

    turned = await api.post("/v0/detect", files={"photo": ("t.jpg", stored.getvalue())})
    assert turned.status_code == 200
    assert turned.json()["orientation"] == 6
    plain = await api.post("/v0/detect", files={"photo": ("p.jpg", BIDEN)})
    ((box,), (expected,)) = turned.json()["faces"], plain.json()["faces"]
    assert all(abs(box[k] - expected[k]) <= 3 for k in ("x1", "y1", "x2", "y2"))


async def test_several_faces_rejected_lists_them_and_stores_nothing(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/v0/face", files={"photo": ("p.jpg", TWO_PEOPLE)}, data={"mf_selector": "reject"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert body["reason"] == "Too many faces: 2"
    assert len(body["faces"]) == 2
    assert (await api.get("/v0/faces")).json()["results"] == []

    everyone = await api.post(
        "/v0/face", files={"photo": ("p.jpg", TWO_PEOPLE)}, data={"mf_selector": "all"}
    )
    assert len(everyone.json()["results"]) == 2
    biggest = await api.post("/v0/face", files={"photo": ("p.jpg", TWO_PEOPLE)})
    assert len(biggest.json()["results"]) == 1


async def test_galleries_scope_faces_and_identification(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v0/galleries/vip")).status_code == 201
    face = await _enroll(api, OBAMA, galleries='["vip"]')
    assert face["galleries"] == ["default", "vip"]
    await _enroll(api, BIDEN)

    found = await api.post(
        "/v0/faces/gallery/vip/identify", files={"photo": ("q.jpg", BIDEN)}, data={"n": "5"}
    )
    (matches,) = found.json()["results"].values()
    assert matches == []  # Biden is only in default
    listed = (await api.get("/v0/faces/gallery/vip")).json()["results"]
    assert [f["id"] for f in listed] == [face["id"]]

    missing = await api.post(
        "/v0/face", files={"photo": ("p.jpg", BIDEN)}, data={"galleries": '["nope"]'}
    )
    assert missing.status_code == 404
    assert len((await api.get("/v0/faces")).json()["results"]) == 2  # nothing half-written

    # "Deletes the gallery and all faces in it": from every gallery they are in.
    assert (await api.delete("/v0/galleries/vip")).status_code == 204
    assert (await api.get(f"/v0/face/id/{face['id']}")).status_code == 404
    assert [f["meta"] for f in (await api.get("/v0/faces")).json()["results"]] == [""]
    obama = await api.post("/v0/identify", files={"photo": ("q.jpg", OBAMA2)}, data={"n": "5"})
    assert [m["face"]["id"] for m in next(iter(obama.json()["results"].values()))] == []
    assert (await api.delete("/v0/galleries/vip")).status_code == 404
    # The default gallery is refused before any of its faces is touched.
    assert (await api.delete("/v0/galleries/default")).status_code == 403
    assert len((await api.get("/v0/faces")).json()["results"]) == 1


async def test_change_and_delete_a_face(api: httpx.AsyncClient) -> None:
    await api.post("/v0/galleries/g1")
    await api.post("/v0/galleries/g2")
    face = await _enroll(api, OBAMA, meta="first")
    face_id = face["id"]

    renamed = await api.put(f"/v0/face/id/{face_id}", json={"meta": "Sam Berry #2"})
    assert renamed.json()["meta"] == "Sam Berry #2"
    added = await api.put(f"/v0/face/id/{face_id}", json={"galleries": {"add": ["g1", "g2"]}})
    assert added.json()["galleries"] == ["default", "g1", "g2"]
    in_g2 = await api.post("/v0/faces/gallery/g2/identify", files={"photo": ("q.jpg", OBAMA2)})
    assert next(iter(in_g2.json()["results"].values()))[0]["face"]["id"] == face_id
    removed = await api.put(f"/v0/face/id/{face_id}", json={"galleries": {"del": ["g2"]}})
    assert removed.json()["galleries"] == ["default", "g1"]
    in_g2 = await api.post("/v0/faces/gallery/g2/identify", files={"photo": ("q.jpg", OBAMA2)})
    assert next(iter(in_g2.json()["results"].values())) == []
    reset = await api.put(f"/v0/face/id/{face_id}", json={"galleries": {"set": ["g2"]}})
    assert reset.json()["galleries"] == ["default", "g2"]
    refused = await api.put(f"/v0/face/id/{face_id}", json={"galleries": {"del": ["default"]}})
    assert refused.status_code == 400 and refused.json()["param"] == "galleries"

    assert (await api.delete(f"/v0/face/id/{face_id}")).status_code == 204
    assert (await api.get(f"/v0/face/id/{face_id}")).status_code == 404
    assert (await api.delete(f"/v0/face/id/{face_id}")).status_code == 404
    gone = await api.post("/v0/identify", files={"photo": ("q.jpg", OBAMA2)})
    assert next(iter(gone.json()["results"].values())) == []


async def test_strict_comes_from_the_request_or_the_ignore_search_errors_setting(
    api: httpx.AsyncClient, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the shard router is asked for; with one live shard both answers look alike, and
    # the router's own test covers what strict does with a dead one.
    asked: list[bool] = []
    search = ShardRouter.search

    async def recorded(self: ShardRouter, *args: Any, strict: bool = False, **kw: Any) -> Any:
        asked.append(strict)
        return await search(self, *args, strict=strict, **kw)

    monkeypatch.setattr(ShardRouter, "search", recorded)
    await _enroll(api, OBAMA)

    async def identify(**fields: str) -> int:
        files = {"photo": ("q.jpg", OBAMA2)}
        return (await api.post("/v0/identify", files=files, data=fields)).status_code

    assert [await identify(), await identify(strict="true")] == [200, 200]
    backends.faces.strict_search = True  # tntapi_ignore_search_errors = false
    assert [await identify(), await identify(strict="false")] == [200, 200]
    assert asked == [False, True, True, False]
    assert await identify(strict="maybe") == 400


async def test_a_meta_with_slashes_is_found_url_encoded(api: httpx.AsyncClient) -> None:
    # mass-enroll --meta-filename makes the file's path the meta.
    assert (await api.post("/v0/galleries/g")).status_code == 201
    nested = (await _enroll(api, OBAMA, meta="photos/2024/a b.jpg", galleries='["g"]'))["id"]
    rooted = (await _enroll(api, BIDEN, meta="/srv/photos/"))["id"]

    for path in (
        "/v0/face/meta/photos%2F2024%2Fa%20b.jpg",
        "/v0/face/meta/photos%2F2024%2Fa%20b.jpg/",
        "/v1/face/gallery/g/meta/photos%2F2024%2Fa%20b.jpg/",
    ):
        found = await api.get(path)
        assert found.status_code == 200, path
        assert [f["id"] for f in found.json()["results"]] == [nested], path
    # A final slash that belongs to the meta is sent encoded; an unencoded one is the route's.
    ending = (await api.get("/v0/face/meta/%2Fsrv%2Fphotos%2F/")).json()["results"]
    assert [f["id"] for f in ending] == [rooted]
    assert (await api.get("/v0/face/meta/%2Fsrv%2Fphotos/")).json()["results"] == []
    for empty in ("/v0/face/meta/", "/v1/face/gallery/g/meta/"):
        refused = await api.get(empty)  # not every face without a meta at once
        assert refused.status_code == 400 and refused.json()["param"] == "meta", empty


async def test_faces_are_paged_newest_first(api: httpx.AsyncClient) -> None:
    ids = [(await _enroll(api, OBAMA, meta=f"m{i % 2}"))["id"] for i in range(5)]
    first = (await api.get("/v0/faces", params={"limit": 2})).json()
    assert [f["id"] for f in first["results"]] == ids[::-1][:2]
    assert first["prev_page"] is None
    second = (await api.get(first["next_page"])).json()
    assert [f["id"] for f in second["results"]] == ids[::-1][2:4]
    back = (await api.get(second["prev_page"])).json()
    assert [f["id"] for f in back["results"]] == ids[::-1][:2]
    third = (await api.get(second["next_page"])).json()
    assert [f["id"] for f in third["results"]] == ids[:1]
    assert third["next_page"] is None

    by_meta = (await api.get("/v0/face/meta/m0")).json()["results"]
    assert [f["id"] for f in by_meta] == [ids[0], ids[2], ids[4]]
    metas = (await api.get("/v0/meta")).json()
    # Each meta with its count and first face; newest first, paged like /faces.
    assert [(m["meta"], m["count"], m["face"]["id"]) for m in metas["results"]] == [
        ("m1", 2, ids[1]),
        ("m0", 3, ids[0]),
    ]
    assert metas["next_page"] is None and metas["prev_page"] is None


async def test_metas_are_paged_by_their_first_face(api: httpx.AsyncClient) -> None:
    firsts = [(await _enroll(api, OBAMA, meta=f"person {i}"))["id"] for i in range(5)]
    await _enroll(api, OBAMA2, meta="person 0")  # a later face of a meta keeps its place
    await _enroll(api, BIDEN)  # no meta: not listed

    first = (await api.get("/v1/meta", params={"limit": 2})).json()
    assert [m["meta"] for m in first["results"]] == ["person 4", "person 3"]
    assert first["prev_page"] is None
    second = (await api.get(first["next_page"])).json()
    assert [m["meta"] for m in second["results"]] == ["person 2", "person 1"]
    back = (await api.get(second["prev_page"])).json()
    assert [m["meta"] for m in back["results"]] == ["person 4", "person 3"]
    third = (await api.get(second["next_page"])).json()
    assert [(m["meta"], m["count"], m["face"]["id"]) for m in third["results"]] == [
        ("person 0", 2, firsts[0])
    ]
    assert third["next_page"] is None
    bad = await api.get("/v1/meta", params={"max_id": "x"})
    assert bad.status_code == 400 and bad.json()["param"] == "max_id"


async def test_photo_urls_are_fetched_directly(api: httpx.AsyncClient, photo_server: str) -> None:
    url = f"{photo_server}/face_recognition/examples/obama.jpg"
    added = await api.post("/v0/face", json={"photo": url, "meta": "by url"})
    assert added.status_code == 200
    assert added.json()["results"][0]["photo"] == url  # the seed shows the client's URL
    redirected = await api.post("/v0/detect", json={"photo": f"{photo_server}/redirect"})
    assert redirected.status_code == 400
    assert redirected.json()["param"] == "photo"
    assert "redirect" in redirected.json()["reason"]
    form = await api.post(
        "/v0/detect", data={"photo": f"{photo_server}/face_recognition/examples/biden.jpg"}
    )
    assert len(form.json()["faces"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"files": {"photo": ("p.txt", b"hello, not a photo")}}, 415, "photo"),
        (
            {"files": {"photo": ("p.jpg", b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024))}},
            413,
            "photo",
        ),
        ({"files": {"photo": ("p.jpg", OBAMA[: len(OBAMA) // 3])}}, 400, "photo"),
        ({"json": {}}, 400, "photo"),
        ({"json": {"photo": "file:///etc/passwd"}}, 400, "photo"),
        ({"json": {"photo": "http://169.254.169.254/latest/meta-data/"}}, 400, "photo"),
        (
            {"files": {"photo": ("p.jpg", OBAMA)}, "data": {"mf_selector": "some"}},
            400,
            "mf_selector",
        ),
        ({"files": {"photo": ("p.jpg", OBAMA)}, "data": {"bbox": "[1, 2]"}}, 400, "bbox"),
        ({"files": {"photo": ("p.jpg", OBAMA)}, "data": {"meta": "x" * 5000}}, 400, "meta"),
        # Past any photo, and past the wire format's 32-bit integers (found by fuzzing).
        (
            {"files": {"photo": ("p.jpg", OBAMA)}, "data": {"bbox": "[[0, 0, 3554334205, 9]]"}},
            400,
            "bbox",
        ),
    ],
)
async def test_bad_face_requests_are_precise_and_store_nothing(
    api: httpx.AsyncClient, kwargs: dict[str, object], status: int, param: str
) -> None:
    response = await api.post("/v0/face", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["code"] == "BAD_PARAM"
    assert response.json()["param"] == param
    assert (await api.get("/v0/faces")).json()["results"] == []


async def test_malformed_json_and_bad_ids(api: httpx.AsyncClient) -> None:
    broken = await api.post(
        "/v0/detect", content=b'{"photo": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["code"] == "MALFORMED_JSON"
    assert (await api.get("/v0/face/id/abc")).json()["code"] == "BAD_PARAM"
    assert (await api.get("/v0/face/id/999999")).status_code == 404


async def test_a_video_worker_post_with_a_normalized_face(api: httpx.AsyncClient) -> None:
    """What fkvideo_detector sends: the frame, the aligned face as face0, bbox, cam_id,
    timestamp and detectorParams; the vector comes from face0 without detecting again."""
    enrolled = await _enroll(api, OBAMA, meta="known")
    chip = (await api.get(enrolled["normalized"])).content
    response = await api.post(
        "/v1/face",
        files={"photo": ("frame.jpg", OBAMA2), "face0": ("face0.png", chip)},
        data={
            "cam_id": "1b19a189-26b9-42e5-8cd8-6cabde79dc7e",
            "timestamp": "2017-08-25T13:09:54",
            "bbox": "[[620,380,1383,1143]]",
            "detectorParams": '{"score": -0.000911839, "direction_score": -0.568228}',
        },
    )
    assert response.status_code == 200, response.text
    (face,) = response.json()["results"]
    assert (face["x1"], face["y1"], face["x2"], face["y2"]) == (620, 380, 1383, 1143)
    assert face["timestamp"] == "2017-08-25T13:09:54.000000"
    assert face["cam_id"] == "1b19a189-26b9-42e5-8cd8-6cabde79dc7e"
    # face0 is the enrolled face's own chip: identifying it finds that face at once.
    found = await api.post("/v0/identify", files={"photo": ("q.png", chip)}, data={"n": "3"})
    ids = [m["face"]["id"] for m in next(iter(found.json()["results"].values()))]
    assert enrolled["id"] in ids and face["id"] in ids
    bad = await api.post(
        "/v1/face",
        files={"photo": ("frame.jpg", OBAMA2)},
        data={"detectorParams": "[1, 2]"},
    )
    assert bad.status_code == 400 and bad.json()["param"] == "detectorParams"


async def test_concurrent_first_faces_of_a_gallery_are_all_enrolled(
    api: httpx.AsyncClient,
) -> None:
    # The first adds to a fresh database race to create the gallery's index plan and the id
    # counter (a 500 once, with the stand-in); every one must succeed, each with its own id.
    assert (await api.post("/v1/galleries/race")).status_code == 201
    photos = [OBAMA, OBAMA2, BIDEN] * 3
    answers = await asyncio.gather(
        *(
            api.post(
                "/v0/face",
                files={"photo": ("p.jpg", p)},
                data={"meta": f"{n}", "galleries": "race"},
            )
            for n, p in enumerate(photos)
        )
    )
    assert [a.status_code for a in answers] == [200] * len(photos), [a.text for a in answers]
    ids = [face["id"] for a in answers for face in a.json()["results"]]
    assert len(ids) == len(set(ids)) == len(photos)

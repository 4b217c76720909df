"""Dynamic person creation, friend or foe, and camera history, with real photos."""

from __future__ import annotations

import datetime as dt

import httpx

from facegrid.gateway.app import Backends
from facegrid.gateway.core.persons import PersonPolicy
from tests.conftest import FACES

EXAMPLES = FACES / "face_recognition" / "examples"
OBAMA = (EXAMPLES / "obama.jpg").read_bytes()
OBAMA2 = (EXAMPLES / "obama2.jpg").read_bytes()
BIDEN = (EXAMPLES / "biden.jpg").read_bytes()
CAM1 = "0c1a8d52-5f0e-4b8e-9d1b-111111111111"
CAM2 = "0c1a8d52-5f0e-4b8e-9d1b-222222222222"


async def _post(api: httpx.AsyncClient, photo: bytes, cam: str, **fields: str) -> dict[str, object]:
    response = await api.post(
        "/v0/face", files={"photo": ("p.jpg", photo)}, data={"cam_id": cam, **fields}
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["results"][0])


async def test_faces_join_the_persons_they_resemble_per_camera(
    api: httpx.AsyncClient, backends: Backends
) -> None:
    backends.faces.policy = PersonPolicy(identify=True)
    first = await _post(api, OBAMA, CAM1, meta="Barack")
    again = await _post(api, OBAMA2, CAM1)
    other = await _post(api, BIDEN, CAM1, meta="Joe")
    elsewhere = await _post(api, OBAMA, CAM2)
    assert first["person_id"] == again["person_id"]
    assert other["person_id"] != first["person_id"]
    assert elsewhere["person_id"] not in (first["person_id"], other["person_id"])
    assert first["friend"] is False
    # Posted without a meta, a face takes its reference face's.
    assert (again["meta"], elsewhere["meta"]) == ("Barack", "")

    persons = (await api.get("/v0/persons")).json()["results"]
    assert len(persons) == 3
    assert {"id": first["person_id"], "meta": "Barack"} in persons
    person = (await api.get(f"/v0/person/id/{first['person_id']}")).json()
    assert [f["id"] for f in person["faces"]] == [first["id"], again["id"]]

    history = (await api.get(f"/v0/person/history/id/{first['person_id']}")).json()["results"]
    assert [e["face_id"] for e in history] == [again["id"], first["id"]]
    assert set(history[0]) == {"person_id", "face_id", "cam_id", "meta", "screenshot", "timestamp"}

    on_cam2 = (await api.post("/v0/history/search", json={"cam_ids": [CAM2]})).json()
    assert [e["face_id"] for e in on_cam2["results"]] == [elsewhere["id"]]
    page = (await api.post("/v0/history/search", json={"limit": 2})).json()
    assert len(page["results"]) == 2 and "next_page" in page
    rest = (await api.post(page["next_page"], json={"limit": 2})).json()
    assert [e["face_id"] for e in rest["results"]] == [again["id"], first["id"]]
    # Events have ids of their own, and the next page starts below the last one shown.
    ids = [e["id"] for e in page["results"] + rest["results"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4
    assert page["next_page"].endswith(f"max_id={page['results'][-1]['id']}")

    # The gateway's own per-camera galleries are neither listed nor creatable.
    assert (await api.get("/v0/galleries")).json()["results"] == ["default"]
    refused = await api.post("/v0/galleries/fg--mine")
    assert refused.status_code == 400 and refused.json()["param"] == "gallery"


async def test_global_identification_spans_cameras(
    api: httpx.AsyncClient, backends: Backends
) -> None:
    backends.faces.policy = PersonPolicy(identify=True, identify_global=True)
    first = await _post(api, OBAMA, CAM1)
    second = await _post(api, OBAMA2, CAM2)
    assert first["person_id"] == second["person_id"]


async def test_a_person_seen_on_enough_days_is_a_friend(
    api: httpx.AsyncClient, backends: Backends
) -> None:
    backends.faces.policy = PersonPolicy(identify=True, friend_count=2)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    monday = (now - dt.timedelta(days=2)).isoformat()
    monday_later = (now - dt.timedelta(days=2) + dt.timedelta(minutes=1)).isoformat()
    tuesday = (now - dt.timedelta(days=1)).isoformat()
    assert (await _post(api, OBAMA, CAM1, timestamp=monday))["friend"] is False
    assert (await _post(api, OBAMA2, CAM1, timestamp=monday_later))["friend"] is False
    assert (await _post(api, OBAMA, CAM1, timestamp=tuesday))["friend"] is True
    friends = (await api.post("/v0/history/search", json={"friend": True})).json()["results"]
    assert len(friends) == 1


async def test_without_person_identification_events_are_still_recorded(
    api: httpx.AsyncClient,
) -> None:
    face = await _post(api, OBAMA, CAM1)
    assert "person_id" not in face and "friend" not in face
    (event,) = (await api.post("/v0/history/search", json={})).json()["results"]
    assert (event["face_id"], event["cam_id"], event["person_id"]) == (face["id"], CAM1, None)
    bad = await api.post(
        "/v0/face", files={"photo": ("p.jpg", OBAMA)}, data={"cam_id": "../../etc"}
    )
    assert bad.status_code == 400 and bad.json()["param"] == "cam_id"
    bad_time = await api.post("/v0/history/search", json={"start": "yesterday"})
    assert bad_time.status_code == 400 and bad_time.json()["param"] == "start"


async def test_faces_posted_without_a_camera_get_persons_of_their_own(
    api: httpx.AsyncClient, backends: Backends
) -> None:
    # The seed's /face POST example: no cam_id, and the face comes back with a person_id.
    backends.faces.policy = PersonPolicy(identify=True)
    first = (await api.post("/v0/face", files={"photo": ("p.jpg", OBAMA)})).json()["results"][0]
    again = (await api.post("/v0/face", files={"photo": ("p.jpg", OBAMA2)})).json()["results"][0]
    other = (await api.post("/v0/face", files={"photo": ("p.jpg", BIDEN)})).json()["results"][0]
    camera = await _post(api, OBAMA2, CAM1)
    assert first["person_id"] == again["person_id"] != other["person_id"]
    assert first["friend"] is False and "cam_id" not in first
    # Per camera, photos without one are a camera of their own.
    assert camera["person_id"] not in (first["person_id"], other["person_id"])
    stored = (await api.get(f"/v0/face/id/{again['id']}")).json()
    assert (stored["person_id"], stored["friend"]) == (first["person_id"], False)
    # Only camera faces make history.
    history = (await api.get(f"/v0/person/history/id/{first['person_id']}")).json()["results"]
    assert history == []

    backends.faces.policy = PersonPolicy(identify=False)
    off = (await api.post("/v0/face", files={"photo": ("p.jpg", OBAMA)})).json()["results"][0]
    assert "person_id" not in off and "friend" not in off


async def test_put_person_id_brings_a_stored_face_into_person_identification(
    api: httpx.AsyncClient, backends: Backends
) -> None:
    """The reference's way to bring faces stored before person identification was on (they
    have no person) into it: PUT their person_id."""
    old = await _post(api, OBAMA, CAM1, meta="Barack")  # stored before persons were on
    assert "person_id" not in old
    backends.faces.policy = PersonPolicy(identify=True)
    changed = await api.put(f"/v0/face/id/{old['id']}", json={"person_id": 50})
    assert changed.status_code == 200 and changed.json()["person_id"] == 50

    later = await _post(api, OBAMA2, CAM1)  # finds the old face now
    assert (later["person_id"], later["meta"]) == (50, "Barack")
    person = (await api.get("/v0/person/id/50")).json()
    assert (person["meta"], [f["id"] for f in person["faces"]]) == (
        "Barack",
        [old["id"], later["id"]],
    )
    history = (await api.post("/v0/history/search", json={"person_id": 50})).json()["results"]
    assert [e["face_id"] for e in history] == [later["id"], old["id"]]
    # Persons made afterwards do not take the id a client chose.
    assert (await _post(api, BIDEN, CAM1))["person_id"] > 50

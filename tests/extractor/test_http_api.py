"""The seed's Extraction API over HTTP, on the real models: requests, replies, errors."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from facegrid.extractor.core.engine import Engine
from facegrid.extractor.core.extraction import Extraction
from facegrid.extractor.http_api import HttpOptions, create_app
from facegrid.extractor.main import http_options
from facegrid.extractor.settings import ExtractorSettings
from facegrid.fetch import FetchPolicy, parse_networks

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
OBAMA = (FACES / "face_recognition/examples/obama.jpg").read_bytes()


@pytest.fixture(scope="module")
def extraction(model_bundle: Path) -> Extraction:
    engine = Engine(model_bundle)
    engine.warm_up()
    return Extraction(engine, max_batch=8)


@pytest.fixture
async def api(extraction: Extraction) -> AsyncIterator[httpx.AsyncClient]:
    # Loopback allowed: a local server stands in for photo URLs on the internet.
    local = FetchPolicy(timeout=5, allow=parse_networks(["127.0.0.0/8"]))
    app = create_app(lambda: extraction, HttpOptions(quality_estimator=True, fetch_policy=local))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://extractor"
    ) as client:
        yield client


async def test_multipart_request_with_everything(api: httpx.AsyncClient) -> None:
    request = {
        "requests": [
            {
                "image": "multipart:photo",
                "detector": "nnd",
                "need_facen": True,
                "need_gender": True,
                "need_age": True,
                "need_emotions": True,
                "need_normalized": True,
            }
        ]
    }
    response = await api.post(
        "/",
        files={"photo": ("obama.jpg", OBAMA, "image/jpeg")},
        data={"request": json.dumps(request)},
    )
    assert response.status_code == 200
    (reply,) = response.json()["responses"]
    face = max(reply["faces"], key=lambda f: f["detection_score"])
    assert set(face["bbox"]) == {"left", "top", "right", "bottom"}
    assert -1.0 < face["detection_score"] <= 0.0  # the quality estimator's scale
    assert len(np.frombuffer(base64.b64decode(face["facen"]), "<f4")) == 128
    assert face["gender"]["gender"] == "MALE"
    assert 20 < face["age"] < 80
    assert face["emotions"][0]["emotion"] in {"happy", "neutral"}
    assert len(face["emotions"]) == 7
    chip = cv2.imdecode(np.frombuffer(base64.b64decode(face["normalized"]), np.uint8), 1)
    assert chip.shape == (150, 150, 3)


async def test_normalized_round_trips_as_prenormalized(api: httpx.AsyncClient) -> None:
    first = (
        await api.post(
            "/",
            files={"p": ("o.jpg", OBAMA)},
            data={
                "request": json.dumps(
                    {
                        "requests": [
                            {"image": "multipart:p", "need_facen": True, "need_normalized": True}
                        ]
                    }
                )
            },
        )
    ).json()["responses"][0]["faces"]
    best = first[0]
    again = (
        await api.post(
            "/",
            files={"chip": ("c.png", base64.b64decode(best["normalized"]))},
            data={
                "request": json.dumps(
                    {
                        "requests": [
                            {
                                "image": "multipart:chip",
                                "detector": "prenormalized",
                                "need_facen": True,
                            }
                        ]
                    }
                )
            },
        )
    ).json()["responses"][0]["faces"]
    assert len(again) == 1
    a = np.frombuffer(base64.b64decode(best["facen"]), "<f4")
    b = np.frombuffer(base64.b64decode(again[0]["facen"]), "<f4")
    assert np.abs(a - b).max() < 1e-5


async def test_image_by_url_roi_and_only_what_was_asked(
    api: httpx.AsyncClient, photo_server: str
) -> None:
    url = f"{photo_server}/facenet-pytorch/data/multiface.jpg"
    everything = (await api.post("/", json={"requests": [{"image": url}]})).json()
    inside = (
        await api.post(
            "/",
            json={
                "requests": [
                    {"image": url, "roi": {"left": 0, "top": 0, "right": 600, "bottom": 630}}
                ]
            },
        )
    ).json()
    all_faces = everything["responses"][0]["faces"]
    some_faces = inside["responses"][0]["faces"]
    assert 0 < len(some_faces) < len(all_faces)
    assert set(all_faces[0]) == {"bbox", "detection_score"}


async def test_internal_urls_are_refused_by_default(
    extraction: Extraction, photo_server: str
) -> None:
    app = create_app(lambda: extraction, HttpOptions())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://extractor"
    ) as client:
        url = f"{photo_server}/face_recognition/examples/obama.jpg"
        response = await client.post("/", json={"requests": [{"image": url}]})
    error = response.json()["responses"][0]["error"]
    assert error["code"] == "IMAGE_FETCH_FAILED"
    assert "not a public address" in error["desc"]


async def test_fetch_size_limit_setting_caps_fetched_images(
    extraction: Extraction, photo_server: str
) -> None:
    assert http_options(ExtractorSettings()).fetch_policy.max_bytes == 10485760  # the seed's
    with pytest.raises(ValidationError, match="fetch_size_limit"):
        ExtractorSettings(fetch_size_limit=10485761)  # decoding refuses larger photos anyway
    url = f"{photo_server}/face_recognition/examples/obama.jpg"

    async def reply(limit: int) -> dict[str, object]:
        settings = ExtractorSettings(fetch_size_limit=limit, fetch_allow=["127.0.0.0/8"])
        app = create_app(lambda: extraction, http_options(settings))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://extractor"
        ) as client:
            response = await client.post("/", json={"requests": [{"image": url}]})
        assert response.status_code == 200
        result: dict[str, object] = response.json()["responses"][0]
        return result

    assert (await reply(len(OBAMA)))["faces"]
    refused = await reply(len(OBAMA) - 1)
    assert refused["faces"] == []
    assert refused["error"] == {
        "code": "IMAGE_TOO_LARGE",
        "desc": f"{url} is {len(OBAMA)} bytes; the limit is {len(OBAMA) - 1}",
    }


async def test_max_face_size_setting_leaves_larger_faces_out(
    extraction: Extraction, photo_server: str
) -> None:
    assert ExtractorSettings().max_face_size == 0  # the seed's .inf: no limit
    with pytest.raises(ValidationError, match="below min_face_size"):
        ExtractorSettings(min_face_size=50, max_face_size=40)
    url = f"{photo_server}/facenet-pytorch/data/multiface.jpg"

    async def sides(limit: int) -> list[int]:
        # As facegrid.extractor.main builds it from the settings.
        limited = Extraction(extraction.engine, max_batch=8, min_face_size=50, max_face_size=limit)
        app = create_app(
            lambda: limited,
            HttpOptions(fetch_policy=FetchPolicy(allow=parse_networks(["127.0.0.0/8"]))),
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://extractor"
        ) as client:
            response = await client.post("/", json={"requests": [{"image": url}]})
        faces = response.json()["responses"][0]["faces"]
        return sorted(
            max(b["right"] - b["left"], b["bottom"] - b["top"]) for b in (f["bbox"] for f in faces)
        )

    everyone = await sides(0)
    assert len(everyone) >= 5 and everyone[0] < everyone[-1]
    limit = everyone[len(everyone) // 2]
    assert await sides(limit) == [side for side in everyone if side <= limit]
    # The gRPC Detect request's own max_face_size wins over the setting.
    limited = Extraction(extraction.engine, max_batch=8, min_face_size=50, max_face_size=limit)
    photo = (FACES / "facenet-pytorch/data/multiface.jpg").read_bytes()
    assert len(limited.detect([photo])[0].faces) < len(everyone)
    assert len(limited.detect([photo], max_face_size=everyone[-1])[0].faces) == len(everyone)


async def test_auto_rotate_reads_an_upside_down_face_upright(api: httpx.AsyncClient) -> None:
    image = cv2.imdecode(np.frombuffer(OBAMA, np.uint8), cv2.IMREAD_COLOR)
    upside_down = cv2.imencode(".jpg", cv2.rotate(image, cv2.ROTATE_180))[1].tobytes()

    async def best_face(data: bytes, auto_rotate: bool) -> dict[str, object]:
        request = {
            "requests": [{"image": "multipart:p", "need_facen": True, "auto_rotate": auto_rotate}]
        }
        response = await api.post(
            "/", files={"p": ("p.jpg", data)}, data={"request": json.dumps(request)}
        )
        faces = response.json()["responses"][0]["faces"]
        return max(faces, key=lambda f: f["detection_score"])

    def facen(face: dict[str, object]) -> np.ndarray:
        return np.frombuffer(base64.b64decode(str(face["facen"])), "<f4")

    upright = await best_face(OBAMA, False)
    plain = await best_face(upside_down, False)
    turned = await best_face(upside_down, True)
    assert float(turned["detection_score"]) > float(plain["detection_score"])  # type: ignore[arg-type]
    assert np.linalg.norm(facen(turned) - facen(upright)) < 0.3
    box = turned["bbox"]
    assert isinstance(box, dict)
    # Obama's face is near the top of the upright photo, so near the bottom of this one.
    assert box["top"] > image.shape[0] / 2


async def test_each_bad_request_fails_alone(api: httpx.AsyncClient, photo_server: str) -> None:
    request = {
        "requests": [
            {"image": "multipart:garbage"},
            {"image": "multipart:missing"},
            {"image": "ftp://example/x.jpg"},
            {"image": "multipart:photo", "detector": "fancy"},
            {"image": "multipart:photo", "roi": {"left": 10}},
            {"image": f"{photo_server}/no/such/file.jpg"},
            {"image": "multipart:photo", "need_facen": "yes"},
            {"image": "multipart:photo"},
        ]
    }
    response = await api.post(
        "/",
        files={"garbage": ("g.jpg", b"nope"), "photo": ("o.jpg", OBAMA)},
        data={"request": json.dumps(request)},
    )
    assert response.status_code == 200
    replies = response.json()["responses"]
    codes = [r.get("error", {}).get("code") for r in replies]
    assert codes == [
        "IMAGE_DECODING_FAILED",
        "BAD_PARAM",
        "BAD_PARAM",
        "BAD_PARAM",
        "BAD_PARAM",
        "IMAGE_FETCH_FAILED",
        "BAD_PARAM",
        None,
    ]
    assert all(r["error"]["desc"] for r in replies[:-1])
    assert replies[-1]["faces"]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "MALFORMED_JSON"), (b'{"requests": 5}', "BAD_PARAM"), (b"[]", "BAD_PARAM")],
)
async def test_malformed_bodies(api: httpx.AsyncClient, body: bytes, code: str) -> None:
    response = await api.post("/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_oversize_batch_is_refused(api: httpx.AsyncClient) -> None:
    requests = [{"image": "multipart:p"}] * 9
    response = await api.post(
        "/", files={"p": ("o.jpg", OBAMA)}, data={"request": json.dumps({"requests": requests})}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_PARAM"


def test_the_extractor_process_serves_http_beside_grpc(
    model_bundle: Path, unused_port: int
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        grpc_port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "facegrid.extractor"],
        env={
            **env,
            "FACEGRID_EXTRACTOR_MODEL_DIR": str(model_bundle),
            "FACEGRID_EXTRACTOR_LISTEN": f"127.0.0.1:{grpc_port}",
            "FACEGRID_EXTRACTOR_HTTP_LISTEN": f"127.0.0.1:{unused_port}",
            "FACEGRID_EXTRACTOR_METRICS_LISTEN": "",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{unused_port}/",
                    files={"p": ("o.jpg", OBAMA)},
                    data={"request": json.dumps({"requests": [{"image": "multipart:p"}]})},
                    timeout=30,
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, "the extractor exited"
                assert time.monotonic() < deadline, "the Extraction API never answered"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["responses"][0]["faces"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stderr is not None
        process.stderr.close()

"""The extractor over gRPC with the real model bundle: detect, extract, errors, health."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.extractor import main as extractor_main
from facegrid.extractor.core import extraction
from facegrid.extractor.settings import ExtractorSettings
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
OBAMA = (FACES / "face_recognition/examples/obama.jpg").read_bytes()
OBAMA2 = (FACES / "face_recognition/examples/obama2.jpg").read_bytes()
BIDEN = (FACES / "face_recognition/examples/biden.jpg").read_bytes()


async def _serve(settings: ExtractorSettings) -> AsyncIterator[grpc.aio.Channel]:
    server, _, port = await grpcserver.start(extractor_main.build(settings, CollectorRegistry()))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


@pytest.fixture
async def stub(
    model_bundle: Path, unused_port: int
) -> AsyncIterator[extractor_pb2_grpc.ExtractorStub]:
    settings = ExtractorSettings(
        listen=f"127.0.0.1:{unused_port}",
        metrics_listen=None,
        model_dir=model_bundle,
        max_batch=8,
    )
    async for channel in _serve(settings):
        yield extractor_pb2_grpc.ExtractorStub(channel)


def _facen(result: pb.ExtractResult) -> np.ndarray:
    return np.frombuffer(result.facen, dtype="<f4")


async def test_detect_reports_faces_landmarks_and_quality(
    stub: extractor_pb2_grpc.ExtractorStub,
) -> None:
    group = (FACES / "facenet-pytorch/data/multiface.jpg").read_bytes()
    response = await stub.Detect(
        pb.DetectRequest(images=[pb.Image(data=OBAMA), pb.Image(data=group)])
    )
    obama, crowd = response.results
    assert (obama.width, obama.height) == (910, 1137)
    best = max(obama.faces, key=lambda f: f.score)
    assert best.score > 0.99
    assert len(best.landmarks) == 5
    assert -1.0 < best.quality <= 0.0
    assert len(crowd.faces) >= 5


async def test_roi_and_face_size_limits(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    group = (FACES / "facenet-pytorch/data/multiface.jpg").read_bytes()
    everything = (await stub.Detect(pb.DetectRequest(images=[pb.Image(data=group)]))).results[0]
    roi = pb.BBox(x1=0, y1=0, x2=600, y2=630)
    left = (await stub.Detect(pb.DetectRequest(images=[pb.Image(data=group)], roi=roi))).results[0]
    assert 0 < len(left.faces) < len(everything.faces)
    assert all((f.bbox.x1 + f.bbox.x2) / 2 < 600 for f in left.faces)
    small = await stub.Detect(pb.DetectRequest(images=[pb.Image(data=group)], max_face_size=20))
    assert list(small.results[0].faces) == []


async def test_extract_vectors_and_attributes(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    response = await stub.Extract(
        pb.ExtractRequest(
            items=[pb.ExtractItem(image=pb.Image(data=d)) for d in (OBAMA, OBAMA2, BIDEN)],
            facen=True,
            gender=True,
            age=True,
            emotions=True,
            normalized=True,
        )
    )
    assert (response.model, response.facen_size) == ("dlib-resnet-v1", 128)
    obama, obama2, biden = response.results
    assert np.linalg.norm(_facen(obama) - _facen(obama2)) < 0.6
    assert np.linalg.norm(_facen(obama) - _facen(biden)) > 0.6
    assert obama.attributes.gender == "male"
    assert 20 < obama.attributes.age < 80
    assert len(obama.attributes.emotions) == 7
    confidences = [e.confidence for e in obama.attributes.emotions]
    assert confidences == sorted(confidences, reverse=True)
    chip = cv2.imdecode(np.frombuffer(obama.normalized, np.uint8), cv2.IMREAD_COLOR)
    assert chip.shape == (150, 150, 3)


async def test_faces_of_one_photo_share_its_decoding(
    stub: extractor_pb2_grpc.ExtractorStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every face of a group photo in one call (the same photo in each item, as the gateway
    sends them): the photo is decoded once, and each face gets what it gets alone."""
    group = (FACES / "facenet-pytorch/data/multiface.jpg").read_bytes()
    found = (await stub.Detect(pb.DetectRequest(images=[pb.Image(data=group)]))).results[0]
    items = [
        pb.ExtractItem(image=pb.Image(data=group), bbox=f.bbox, landmarks=f.landmarks)
        for f in found.faces[:8]
    ]
    assert len(items) >= 5
    decoded: list[int] = []
    real = extraction._decode

    def counting(data: bytes) -> object:
        decoded.append(len(data))
        return real(data)

    monkeypatch.setattr(extraction, "_decode", counting)
    together = (await stub.Extract(pb.ExtractRequest(items=items, facen=True))).results
    assert decoded == [len(group)]
    for item, result in zip(items, together, strict=True):
        alone = (await stub.Extract(pb.ExtractRequest(items=[item], facen=True))).results[0]
        assert (result.bbox, result.facen) == (alone.bbox, alone.facen)
        assert not result.error.code


async def test_prenormalized_chip_gives_the_same_vector(
    stub: extractor_pb2_grpc.ExtractorStub,
) -> None:
    first = (
        await stub.Extract(
            pb.ExtractRequest(
                items=[pb.ExtractItem(image=pb.Image(data=OBAMA))],
                facen=True,
                normalized=True,
            )
        )
    ).results[0]
    again = (
        await stub.Extract(
            pb.ExtractRequest(
                items=[pb.ExtractItem(image=pb.Image(data=first.normalized), prenormalized=True)],
                facen=True,
                gender=True,
            )
        )
    ).results[0]
    assert np.abs(_facen(first) - _facen(again)).max() < 1e-5
    assert again.attributes.gender == "male"


async def test_bad_items_fail_alone(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    no_face = (FACES / "no-faces/skimage/coffee.png").read_bytes()
    response = await stub.Extract(
        pb.ExtractRequest(
            items=[
                pb.ExtractItem(image=pb.Image(data=b"garbage")),
                pb.ExtractItem(image=pb.Image(data=OBAMA[:5000])),
                pb.ExtractItem(image=pb.Image(data=no_face)),
                pb.ExtractItem(image=pb.Image(data=OBAMA)),
            ],
            facen=True,
        )
    )
    codes = [r.error.code for r in response.results]
    assert codes == ["IMAGE_DECODING_FAILED", "IMAGE_DECODING_FAILED", "NO_FACE", ""]
    assert len(_facen(response.results[3])) == 128
    detected = await stub.Detect(pb.DetectRequest(images=[pb.Image(data=b"")]))
    assert detected.results[0].error.code == "IMAGE_EMPTY"


@pytest.mark.parametrize("count", [0, 9])
async def test_empty_and_oversize_batches_are_refused(
    stub: extractor_pb2_grpc.ExtractorStub, count: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Detect(pb.DetectRequest(images=[pb.Image(data=OBAMA)] * count))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = await stub.GetModelInfo(pb.ModelInfoRequest())
    assert info.facen_size == 128


async def test_model_info_lists_the_bundle(stub: extractor_pb2_grpc.ExtractorStub) -> None:
    info = await stub.GetModelInfo(pb.ModelInfoRequest())
    tasks = {m.task for m in info.models}
    assert {"facen", "gender", "age", "emotions", "landmarks", "detector.pnet"} <= tasks
    assert all(len(m.sha256) == 64 for m in info.models)
    assert info.providers == ["CPUExecutionProvider"]


async def test_without_models_inference_fails_with_a_reason(unused_port: int) -> None:
    settings = ExtractorSettings(listen=f"127.0.0.1:{unused_port}", metrics_listen=None)
    async for channel in _serve(settings):
        stub = extractor_pb2_grpc.ExtractorStub(channel)
        assert list((await stub.GetModelInfo(pb.ModelInfoRequest())).models) == []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Detect(pb.DetectRequest(images=[pb.Image(data=OBAMA)]))
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "FACEGRID_EXTRACTOR_MODEL_DIR" in (raised.value.details() or "")


async def test_cuda_requested_without_a_gpu_is_not_serving(
    model_bundle: Path, unused_port: int
) -> None:
    settings = ExtractorSettings(
        listen=f"127.0.0.1:{unused_port}",
        metrics_listen=None,
        model_dir=model_bundle,
        device="cuda",
    )
    async for channel in _serve(settings):
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="facegrid.v1.Extractor")
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await extractor_pb2_grpc.ExtractorStub(channel).Detect(
                pb.DetectRequest(images=[pb.Image(data=OBAMA)])
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "CUDAExecutionProvider" in (raised.value.details() or "")


def test_cuda_runs_with_the_configured_cudnn_search_and_without_tf32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This machine's onnxruntime has no CUDA provider; the seam faked is only the list of
    # providers it offers, to check what the extractor would ask a GPU build for.
    offered = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(extractor_main.onnxruntime, "get_available_providers", lambda: offered)
    providers, unavailable = extractor_main.providers_for(ExtractorSettings(device="cuda"))
    assert unavailable == ""
    assert providers == [
        ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}),
        "CPUExecutionProvider",
    ]
    chosen = ExtractorSettings(device="cuda", cuda_conv_algo_search="EXHAUSTIVE", cuda_tf32=True)
    providers, _ = extractor_main.providers_for(chosen)
    assert providers[0] == (
        "CUDAExecutionProvider",
        {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "1"},
    )
    assert extractor_main.providers_for(ExtractorSettings()) == (["CPUExecutionProvider"], "")


def test_a_broken_bundle_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"version": 1}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    result = subprocess.run(
        [sys.executable, "-m", "facegrid.extractor"],
        env={
            **env,
            "FACEGRID_EXTRACTOR_MODEL_DIR": str(tmp_path),
            "FACEGRID_EXTRACTOR_METRICS_LISTEN": "",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FACEGRID_EXTRACTOR_MODEL_DIR" in result.stderr
    assert "Traceback" not in result.stderr


async def test_stage_latencies_are_recorded(model_bundle: Path, unused_port: int) -> None:
    registry = CollectorRegistry()
    settings = ExtractorSettings(
        listen=f"127.0.0.1:{unused_port}", metrics_listen=None, model_dir=model_bundle
    )
    server, _, port = await grpcserver.start(extractor_main.build(settings, registry))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await extractor_pb2_grpc.ExtractorStub(channel).Extract(
            pb.ExtractRequest(
                items=[pb.ExtractItem(image=pb.Image(data=OBAMA))],
                facen=True,
                age=True,
            )
        )
    await server.stop(None)
    for stage in ("detect", "landmarks", "align", "facen", "attributes"):
        count = registry.get_sample_value(
            "facegrid_extractor_stage_seconds_count", {"stage": stage}
        )
        assert count is not None
        assert count >= 1, stage
    assert (
        registry.get_sample_value(
            "facegrid_requests_total",
            {
                "service": "extractor",
                "protocol": "grpc",
                "method": "/facegrid.v1.Extractor/Extract",
                "outcome": "OK",
            },
        )
        == 1.0
    )


async def test_auto_rotate_detects_upside_down_faces_in_photo_coordinates(
    stub: extractor_pb2_grpc.ExtractorStub,
) -> None:
    image = cv2.imdecode(np.frombuffer(OBAMA, np.uint8), cv2.IMREAD_COLOR)
    flipped = cv2.imencode(".jpg", cv2.rotate(image, cv2.ROTATE_180))[1].tobytes()
    plain = (await stub.Detect(pb.DetectRequest(images=[pb.Image(data=flipped)]))).results[0]
    turned = (
        await stub.Detect(pb.DetectRequest(images=[pb.Image(data=flipped)], auto_rotate=True))
    ).results[0]
    best_plain = max(f.quality for f in plain.faces) if plain.faces else -100.0
    best = max(turned.faces, key=lambda f: f.quality)
    assert best.quality > best_plain
    eyes_y = (best.landmarks[0].y + best.landmarks[1].y) / 2
    mouth_y = (best.landmarks[3].y + best.landmarks[4].y) / 2
    assert eyes_y > mouth_y  # read upright, mapped back onto the upside-down photo
    assert best.bbox.y1 <= mouth_y < eyes_y <= best.bbox.y2

"""The extractor service shell: health, model info, and honest errors without a model bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from facegrid import grpcserver
from facegrid.extractor import main as extractor_main
from facegrid.extractor.settings import ExtractorSettings
from facegrid.v1 import extractor_pb2 as pb
from facegrid.v1 import extractor_pb2_grpc

MANIFEST = {
    "version": "2026.11",
    "facen_size": 128,
    "models": [
        {"name": "dlib-resnet", "version": "1", "task": "facen", "sha256": "ab" * 32},
        {"name": "mtcnn", "version": "1", "task": "detector", "sha256": "cd" * 32},
    ],
}


async def _serve(settings: ExtractorSettings) -> AsyncIterator[extractor_pb2_grpc.ExtractorStub]:
    server, _, port = await grpcserver.start(extractor_main.build(settings, CollectorRegistry()))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield extractor_pb2_grpc.ExtractorStub(channel)
    await server.stop(None)


@pytest.fixture
async def bare(unused_port: int) -> AsyncIterator[extractor_pb2_grpc.ExtractorStub]:
    async for stub in _serve(
        ExtractorSettings(listen=f"127.0.0.1:{unused_port}", metrics_listen=None)
    ):
        yield stub


async def test_without_models_inference_fails_with_a_reason(
    bare: extractor_pb2_grpc.ExtractorStub,
) -> None:
    info = await bare.GetModelInfo(pb.ModelInfoRequest())
    assert list(info.models) == []
    assert "CPUExecutionProvider" in info.providers
    for call in (bare.Detect(pb.DetectRequest()), bare.Extract(pb.ExtractRequest())):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "FACEGRID_EXTRACTOR_MODEL_DIR" in (raised.value.details() or "")


async def test_model_info_comes_from_the_bundle_manifest(tmp_path: Path, unused_port: int) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    settings = ExtractorSettings(
        listen=f"127.0.0.1:{unused_port}", metrics_listen=None, model_dir=tmp_path
    )
    async for stub in _serve(settings):
        info = await stub.GetModelInfo(pb.ModelInfoRequest())
        assert info.bundle_version == "2026.11"
        assert info.facen_size == 128
        assert [(m.name, m.task) for m in info.models] == [
            ("dlib-resnet", "facen"),
            ("mtcnn", "detector"),
        ]


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

"""Bad input never kills the extractor and never makes its memory grow."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from facegrid.extractor.core.engine import Engine
from facegrid.extractor.core.extraction import (
    AnalysisRequest,
    BatchError,
    Extraction,
    ExtractItem,
    Wanted,
)

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
OBAMA = (FACES / "face_recognition/examples/obama.jpg").read_bytes()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(1024)))
        + _chunk(b"IEND", b"")
    )


def _zero_size_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    marker = data.find(b"\xff\xc0")  # start of frame: height and width follow the precision
    data[marker + 5 : marker + 9] = b"\x00\x00\x00\x00"
    return bytes(data)


BAD = [
    b"",
    b"not an image",
    OBAMA[:3000],
    OBAMA[:-5000],
    _png_claiming(20000, 20000),
    _png_claiming(0, 0),
    _zero_size_jpeg(),
    bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8)),
]


@pytest.fixture(scope="module")
def extraction(model_bundle: Path) -> Extraction:
    engine = Engine(model_bundle)
    engine.warm_up()
    return Extraction(engine, max_batch=16)


def test_every_bad_photo_gets_a_code_and_good_ones_still_work(extraction: Extraction) -> None:
    results = extraction.extract(
        [ExtractItem(data) for data in [*BAD, OBAMA]], Wanted(facen=True, age=True)
    )
    codes = [r.error.code if r.error else None for r in results]
    assert codes[:-1] == [
        "IMAGE_EMPTY",
        "IMAGE_DECODING_FAILED",
        "IMAGE_DECODING_FAILED",
        "IMAGE_DECODING_FAILED",
        "IMAGE_TOO_LARGE",
        "IMAGE_DECODING_FAILED",
        "IMAGE_DECODING_FAILED",
        "IMAGE_DECODING_FAILED",
    ]
    assert codes[-1] is None
    assert results[-1].facen is not None


def test_empty_and_oversize_batches(extraction: Extraction) -> None:
    with pytest.raises(BatchError, match="empty"):
        extraction.extract([], Wanted())
    with pytest.raises(BatchError, match="limit is 16"):
        extraction.detect([OBAMA] * 17)
    with pytest.raises(BatchError, match="empty"):
        extraction.analyse([], Wanted())


def test_memory_stays_bounded_under_a_stream_of_bad_input(extraction: Extraction) -> None:
    process = psutil.Process()
    wanted = Wanted(facen=True, gender=True, age=True, emotions=True, normalized=True)
    for _ in range(3):  # warm every path first
        extraction.extract([ExtractItem(d) for d in [*BAD, OBAMA]], wanted)
    before = process.memory_info().rss
    for _ in range(40):
        extraction.extract([ExtractItem(d) for d in [*BAD, OBAMA]], wanted)
        extraction.detect(BAD[:8])
        extraction.analyse([AnalysisRequest(d) for d in BAD], wanted)
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 40, f"resident memory grew by {grown:.1f} MiB over 40 rounds"

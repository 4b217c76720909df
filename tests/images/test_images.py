"""Photo intake: real photos decode upright; every kind of bad photo gets its error code."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facegrid.images import MAX_BYTES, ImageError, decode

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height, with almost no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(64)))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("relative", "fmt"),
    [
        ("face_recognition/examples/obama.jpg", "JPEG"),
        ("astronaut.png", "PNG"),
        ("face-api.js/test/images/white.png", "PNG"),
    ],
)
def test_real_photos_decode_to_rgb(relative: str, fmt: str) -> None:
    data = (FACES / relative).read_bytes()
    decoded = decode(data)
    with Image.open(FACES / relative) as reference:
        assert (decoded.width, decoded.height) == reference.size
    assert decoded.format == fmt
    assert decoded.rgb.dtype == np.uint8
    assert decoded.rgb.shape == (decoded.height, decoded.width, 3)


def test_webp_greyscale_and_palette_become_rgb() -> None:
    rgb = Image.new("RGB", (40, 30), (200, 100, 50))
    assert decode(_encode(rgb, "WEBP", lossless=True)).rgb[0, 0].tolist() == [200, 100, 50]
    grey = Image.new("L", (10, 10), 77)
    assert decode(_encode(grey, "PNG")).rgb[5, 5].tolist() == [77, 77, 77]
    palette = rgb.convert("P")
    assert decode(_encode(palette, "PNG")).rgb.shape == (30, 40, 3)
    deep = Image.fromarray(np.full((4, 4), 0x8000, dtype=np.uint16))
    assert decode(_encode(deep, "PNG")).rgb[0, 0].tolist() == [128, 128, 128]


def _pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def test_opencv_decodes_plain_photos_to_pillows_pixels() -> None:
    """Upright 8-bit JPEGs and PNGs are decoded by OpenCV, the rest by Pillow: the pixels are
    Pillow's either way, and a damaged photo is still refused."""
    shared = [
        *sorted(FACES.glob("face_recognition/examples/**/*.jpg"))[:15],
        *sorted(FACES.glob("deepface/**/*.jpg"))[:15],
        *sorted(FACES.glob("face-api.js/examples/images/*/*.png"))[:10],
        FACES / "astronaut.png",
    ]
    rng = np.random.default_rng(4)
    noise = Image.fromarray(rng.integers(0, 256, (61, 83, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (50, 20), dtype=np.uint8))
    photos = [
        *(path.read_bytes() for path in shared),
        _encode(noise, "JPEG", quality=90),
        _encode(grey, "JPEG"),
        _encode(noise, "PNG"),
        _encode(grey, "PNG"),
        _encode(noise, "JPEG") + b"bytes after the end marker",  # Pillow's path
    ]
    for data in photos:
        np.testing.assert_array_equal(decode(data).rgb, _pillow_rgb(data))
    jpeg = photos[0]
    with pytest.raises(ImageError) as raised:
        decode(jpeg[: len(jpeg) // 2])
    assert raised.value.code == "IMAGE_DECODING_FAILED"
    # Cut short but ended with an end marker: libjpeg fills in grey for both decoders.
    patched = jpeg[: len(jpeg) // 2] + b"\xff\xd9"
    np.testing.assert_array_equal(decode(patched).rgb, _pillow_rgb(patched))


def test_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    decoded = decode(_encode(rgba, "PNG"))
    assert decoded.rgb[0, 0].tolist() == [255, 255, 255]
    assert decoded.rgb[1, 1].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied_and_reported() -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was rotated: display rotated 90 degrees clockwise
    decoded = decode(_encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.orientation == 6
    assert (decoded.width, decoded.height) == (20, 60)
    assert decoded.rgb[:10].mean() > 200  # the left band is now at the top


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "IMAGE_EMPTY"),
        (b"this is not an image at all", "IMAGE_DECODING_FAILED"),
        (b"GIF89a" + bytes(100), "IMAGE_DECODING_FAILED"),
        (_png_header_only(0, 0), "IMAGE_DECODING_FAILED"),
        (_png_header_only(20000, 20000), "IMAGE_TOO_LARGE"),
        (b"\xff" * (MAX_BYTES + 1), "IMAGE_TOO_LARGE"),
    ],
)
def test_bad_photos_get_precise_codes(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as raised:
        decode(data)
    assert raised.value.code == code
    assert raised.value.reason


def test_truncated_and_unsupported_files() -> None:
    jpeg = (FACES / "face_recognition/examples/obama.jpg").read_bytes()
    with pytest.raises(ImageError) as raised:
        decode(jpeg[: len(jpeg) // 2])
    assert raised.value.code == "IMAGE_DECODING_FAILED"
    gif = _encode(Image.new("RGB", (5, 5)), "GIF")
    with pytest.raises(ImageError, match="GIF photos are not supported"):
        decode(gif)
    bmp = _encode(Image.new("RGB", (5, 5)), "BMP")
    with pytest.raises(ImageError) as raised:
        decode(bmp)
    assert raised.value.code == "IMAGE_DECODING_FAILED"


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 3000 x 3000 of one colour compresses to a few kB but would decode to 27 MB.
    small_file = _encode(Image.new("RGB", (3000, 3000)), "PNG")
    assert len(small_file) < 100_000
    with pytest.raises(ImageError) as raised:
        decode(small_file, max_pixels=1_000_000)
    assert raised.value.code == "IMAGE_TOO_LARGE"

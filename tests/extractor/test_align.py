"""Our 5-point alignment against dlib's own: the same chips, hence the same descriptors.

Every face dlib's HOG detector (upsampled once) finds in the shared photos goes through the
5-point shape predictor, then through both `dlib.get_face_chip(img, shape, 150, 0.25)` and our
`face_chip`. Their chip rectangles span 66 to 775 image pixels: chips cut straight from the
image and chips cut after one and two pyramid halvings. A crop through a face gives a chip that
runs past the image edge. Random landmark sets and chip rectangles then probe what real faces
rarely reach: any rotation, chips wholly outside the image, odd sizes and paddings, non-square
chips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facegrid.extractor.core import align

# What "the same chip" allows: a handful of pixels off by at most 2 grey levels, as a float
# rounding difference between our NumPy and dlib's C++ could produce. On the machines we ran
# on the replica was bit-exact everywhere (0 pixels differ).
MAX_PIXEL_DIFF = 2
MAX_DIFFERING_PIXELS = 5
MAX_DESCRIPTOR_DIFF = 1e-3

OBAMA = "face_recognition/examples/obama.jpg"
OBAMA_1080P = "face_recognition/examples/obama-1080p.jpg"

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Face:
    label: str
    image: Image
    shape: Any  # dlib.full_object_detection
    parts: npt.NDArray[np.float64]


def _parts(shape: Any) -> npt.NDArray[np.float64]:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _detect(dlib_models: dict[str, Any], label: str, image: Image) -> list[Face]:
    detector, shape5 = dlib_models["detector"], dlib_models["shape5"]
    faces = []
    for i, rect in enumerate(detector(image, 1)):
        shape = shape5(image, rect)
        faces.append(Face(f"{label}#{i}", image, shape, _parts(shape)))
    return faces


def _photo(face_photos: list[tuple[str, Image]], name: str) -> Image:
    for photo_name, image in face_photos:
        if photo_name == name:
            return image
    raise AssertionError(f"{name} is not in shared/data/faces")


def _differences(ours: Image, theirs: Image) -> tuple[int, int]:
    """(largest absolute difference, number of pixels that differ in any channel)."""
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    per_pixel = diff if diff.ndim == 2 else diff.max(axis=2)
    return int(diff.max(initial=0)), int(np.count_nonzero(per_pixel))


@pytest.fixture(scope="module")
def edge_face(dlib_models: dict[str, Any], face_photos: list[tuple[str, Image]]) -> Face:
    """Obama with the left third of his face cropped away: his chip runs past the image edge."""
    image = _photo(face_photos, OBAMA)
    (rect,) = dlib_models["detector"](image, 1)
    cropped = np.ascontiguousarray(image[:, rect.left() + rect.width() // 3 :])
    (face,) = _detect(dlib_models, f"{OBAMA} cropped at the face", cropped)
    return face


@pytest.fixture(scope="module")
def faces(
    dlib_models: dict[str, Any], face_photos: list[tuple[str, Image]], edge_face: Face
) -> list[Face]:
    found = [face for name, image in face_photos for face in _detect(dlib_models, name, image)]
    return [*found, edge_face]


@pytest.fixture(scope="module")
def chips(dlib_models: dict[str, Any], faces: list[Face]) -> list[tuple[Face, Image, Image]]:
    """(face, our chip, dlib's chip) for every face."""
    dlib = dlib_models["dlib"]
    return [
        (
            face,
            align.face_chip(face.image, face.parts, size=150, padding=0.25),
            dlib.get_face_chip(face.image, face.shape, size=150, padding=0.25),
        )
        for face in faces
    ]


def test_the_photos_cover_every_path(faces: list[Face], edge_face: Face) -> None:
    levels = sorted(align.chip_details(face.parts).pyramid_levels for face in faces)
    assert len(faces) >= 20, f"only {len(faces)} faces found"
    assert {0, 1, 2} <= set(levels), f"pyramid levels over the photos: {levels}"
    left = align.chip_details(edge_face.parts).rect[0]
    assert left < -20, f"the cropped face's chip starts at x={left:.1f}, inside the image"


def test_chip_details_match_dlib(dlib_models: dict[str, Any], faces: list[Face]) -> None:
    dlib = dlib_models["dlib"]
    for face in faces:
        ours = align.chip_details(face.parts, size=150, padding=0.25)
        theirs = dlib.get_face_chip_details(face.shape, 150, 0.25)
        rect = theirs.rect
        expected = (rect.left(), rect.top(), rect.right(), rect.bottom())
        assert ours.rect == pytest.approx(expected, abs=1e-9), face.label
        assert ours.angle == pytest.approx(theirs.angle, abs=1e-12), face.label
        assert (ours.rows, ours.cols) == (theirs.rows, theirs.cols) == (150, 150)


def test_chips_match_dlib_pixel_for_pixel(chips: list[tuple[Face, Image, Image]]) -> None:
    worst, differing, report = 0, 0, []
    for face, ours, theirs in chips:
        largest, count = _differences(ours, theirs)
        worst, differing = max(worst, largest), differing + count
        if count:
            report.append(f"{face.label}: {count} px, max {largest}")
    observed = (
        f"{differing} pixels differ over {len(chips)} faces, max |diff| {worst} "
        f"(bit-exact when written: 0 pixels over 24 faces) {report}"
    )
    assert worst <= MAX_PIXEL_DIFF, observed
    assert differing <= MAX_DIFFERING_PIXELS, observed


def test_descriptors_match_dlib(
    dlib_models: dict[str, Any], chips: list[tuple[Face, Image, Image]]
) -> None:
    facerec = dlib_models["facerec"]
    worst = 0.0
    for _, ours, theirs in chips:
        ours_vec = np.array(facerec.compute_face_descriptor(ours))
        theirs_vec = np.array(facerec.compute_face_descriptor(theirs))
        worst = max(worst, float(np.abs(ours_vec - theirs_vec).max()))
    assert worst <= MAX_DESCRIPTOR_DIFF, (
        f"max |descriptor diff| {worst:.2e} over {len(chips)} faces "
        "(0 when written: the chips were identical)"
    )


def test_chip_past_the_image_edge_is_zero_filled(
    dlib_models: dict[str, Any], edge_face: Face
) -> None:
    theirs = dlib_models["dlib"].get_face_chip(edge_face.image, edge_face.shape)
    ours = align.face_chip(edge_face.image, edge_face.parts)
    black = np.asarray(ours.max(axis=2) == 0)
    # A band down the chip's left side lies outside the image (6,045 pixels when written).
    assert black.sum() > 2000
    assert black[:, :10].all()
    np.testing.assert_array_equal(black, theirs.max(axis=2) == 0)
    largest, count = _differences(ours, theirs)
    assert largest <= MAX_PIXEL_DIFF and count <= MAX_DIFFERING_PIXELS, (largest, count)


@pytest.fixture(scope="module")
def hd_face(dlib_models: dict[str, Any], face_photos: list[tuple[str, Image]]) -> Face:
    (face,) = _detect(dlib_models, OBAMA_1080P, _photo(face_photos, OBAMA_1080P))
    return face


@pytest.mark.parametrize(("size", "levels"), [(150, 0), (100, 1), (64, 2)])
def test_1080p_photo(dlib_models: dict[str, Any], hd_face: Face, size: int, levels: int) -> None:
    # Its face is just short of the pyramid at 150 px (about 1.99 image pixels per chip pixel;
    # dlib halves from 1.993), so smaller chips take it through one and two halvings.
    assert align.chip_details(hd_face.parts, size=size).pyramid_levels == levels
    theirs = dlib_models["dlib"].get_face_chip(hd_face.image, hd_face.shape, size, 0.25)
    ours = align.face_chip(hd_face.image, hd_face.parts, size=size, padding=0.25)
    largest, count = _differences(ours, theirs)
    assert largest <= MAX_PIXEL_DIFF and count <= MAX_DIFFERING_PIXELS, (largest, count)


def test_greyscale_matches_dlib(dlib_models: dict[str, Any], faces: list[Face]) -> None:
    dlib = dlib_models["dlib"]
    levels_seen = set()
    for face in faces:
        grey = cv2.cvtColor(face.image, cv2.COLOR_RGB2GRAY)
        ours = align.face_chip(grey, face.parts)
        assert ours.shape == (150, 150)
        np.testing.assert_array_equal(align.face_chip(grey[:, :, None], face.parts), ours)
        largest, count = _differences(ours, dlib.get_face_chip(grey, face.shape))
        assert largest <= MAX_PIXEL_DIFF and count <= MAX_DIFFERING_PIXELS, (face.label, largest)
        levels_seen.add(align.chip_details(face.parts).pyramid_levels)
    assert {0, 1, 2} <= levels_seen


def test_any_landmarks_match_dlib(dlib_models: dict[str, Any], faces: list[Face]) -> None:
    """Real landmarks turned, scaled and moved anywhere, even off the image; odd sizes."""
    dlib = dlib_models["dlib"]
    rng = np.random.default_rng(20261128)
    face = faces[0]
    image, grey = face.image, cv2.cvtColor(face.image, cv2.COLOR_RGB2GRAY)
    height, width = image.shape[:2]
    centred = face.parts - face.parts.mean(axis=0)
    span = float(np.ptp(face.parts[:, 0]))
    worst, differing = 0, 0
    for _ in range(60):
        angle = rng.uniform(-np.pi, np.pi)
        scale = float(np.exp(rng.uniform(np.log(15), np.log(1200)))) / span
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = rng.uniform(-0.3, 1.3, size=2) * (width, height)
        # dlib's shape parts are integer points, so the synthetic ones are too.
        parts = np.round(centred @ rotation.T * scale + centre)
        shape = dlib.full_object_detection(
            dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in parts]
        )
        size = int(rng.choice([1, 2, 64, 150, 151, 200]))
        padding = float(rng.choice([0.0, 0.2, 0.25, 0.5]))
        for img in (image, grey):
            ours = align.face_chip(img, parts, size=size, padding=padding)
            largest, count = _differences(ours, dlib.get_face_chip(img, shape, size, padding))
            worst, differing = max(worst, largest), differing + count
    assert worst <= MAX_PIXEL_DIFF and differing <= MAX_DIFFERING_PIXELS, (worst, differing)


def test_extract_chip_matches_dlib_on_any_rectangle(
    dlib_models: dict[str, Any], faces: list[Face]
) -> None:
    """Chip rectangles straight into extract_chip: non-square, unrotated copies, off-image."""
    dlib = dlib_models["dlib"]
    rng = np.random.default_rng(5)
    image = faces[0].image
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = image.shape[:2]
    worst, differing = 0, 0
    for i in range(40):
        rows, cols = int(rng.integers(1, 120)), int(rng.integers(1, 120))
        if i % 4 == 0:
            # dlib's plain-copy branch: unrotated, one image pixel per chip pixel.
            left, top = float(rng.integers(-100, width)), float(rng.integers(-100, height))
            rect = (left, top, left + cols - 1, top + rows - 1)
            angle = 0.0
        else:
            left, top = rng.uniform(-300, width), rng.uniform(-300, height)
            rect = (left, top, left + rng.uniform(1, 900), top + rng.uniform(1, 900))
            angle = float(rng.choice([0.0, rng.uniform(-4, 4)]))
        details = align.ChipDetails(rect=rect, angle=angle, rows=rows, cols=cols)
        theirs_details = dlib.chip_details(
            dlib.drectangle(*rect), dlib.chip_dims(rows, cols), angle
        )
        for img in (image, grey):
            ours = align.extract_chip(img, details)
            largest, count = _differences(ours, dlib.extract_image_chip(img, theirs_details))
            worst, differing = max(worst, largest), differing + count
    assert worst <= MAX_PIXEL_DIFF and differing <= MAX_DIFFERING_PIXELS, (worst, differing)


def test_padding_is_taken_as_dlib_python_takes_it(
    dlib_models: dict[str, Any], faces: list[Face]
) -> None:
    # get_face_chip's binding reads padding as a C float; 0.2 then is 0.200000003, and the
    # chip moves by about 1e-6 px. Only matters for bit-exactness, which the pixels show.
    face = faces[0]
    theirs = dlib_models["dlib"].get_face_chip(face.image, face.shape, size=150, padding=0.2)
    largest, count = _differences(align.face_chip(face.image, face.parts, padding=0.2), theirs)
    assert largest <= MAX_PIXEL_DIFF and count <= MAX_DIFFERING_PIXELS, (largest, count)


@pytest.mark.parametrize(
    ("parts", "kwargs", "message"),
    [
        (np.zeros((68, 2)), {}, "5 landmarks"),
        (np.full((5, 2), np.nan), {}, "finite"),
        (np.arange(10.0).reshape(5, 2), {"size": 0}, "size"),
        (np.arange(10.0).reshape(5, 2), {"padding": -0.1}, "padding"),
    ],
)
def test_rejects_bad_landmarks(
    parts: npt.NDArray[np.float64], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        align.chip_details(parts, **kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((100, 100, 3), dtype=np.float32),
        np.zeros((100, 100, 4), dtype=np.uint8),
        np.zeros((100,), dtype=np.uint8),
    ],
)
def test_rejects_images_it_cannot_read(image: npt.NDArray[Any]) -> None:
    details = align.ChipDetails(rect=(10.0, 10.0, 60.0, 60.0), angle=0.3, rows=150, cols=150)
    with pytest.raises(ValueError, match="image"):
        align.extract_chip(image, details)

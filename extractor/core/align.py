"""Face alignment: the 150x150 chip dlib's ResNet was trained on, cut exactly as dlib cuts it.

The face descriptor model only gives dlib's accuracy on chips made the way dlib makes them
(`dlib.get_face_chip(img, shape, size=150, padding=0.25)`). A plain similarity warp of the five
landmarks onto the template, done with OpenCV, lands 0.08 away in descriptor distance: an
eighth of the 0.6 match threshold, spent before any two faces are compared. It differs from
dlib in four ways, and each is replicated here:

- Geometry. dlib fits a similarity transform (Umeyama) to the padded mean-face template, but
  then describes the chip as a rotated rectangle whose side is `size * scale - 1` in pixel
  coordinates (its `centered_drect`), and maps chip pixels 0 and size-1 onto that rectangle's
  edges. The chip's pixel pitch is therefore `(size*scale - 1) / (size - 1)`, a little narrower
  than the similarity fit's `scale`.
- Sampling. Bilinear in double precision, the result truncated (not rounded) to uint8; a
  sample whose 2x2 neighbourhood is not wholly inside the image is 0. OpenCV's `warpAffine`
  uses 5-bit fixed-point weights, rounds, and blends the border, so we sample in NumPy.
- Zero fill. Where the chip runs past the image edge dlib writes 0; replicating or blending the
  border moved descriptors by up to 0.045 on LFW.
- Pyramid. When the face is more than about twice the chip size, dlib first crops a margin
  around the face and halves it through its 5-tap Gaussian pyramid (`pyramid_down<2>`,
  integer arithmetic) until bilinear sampling no longer skips pixels; a plain resize was
  0.06-0.09 away.

The five points are in the order of dlib's 5-point shape predictor
(shape_predictor_5_face_landmarks.dat), described in image terms for an upright face:

    0: outer corner of the eye on the image's right (the subject's left eye)
    1: inner corner of that eye
    2: outer corner of the eye on the image's left (the subject's right eye)
    3: inner corner of that eye
    4: base of the nose, at the top of the philtrum

This is the order dlib documents as "left eye outer, left eye inner, right eye outer, right eye
inner, under the nose", left and right being the subject's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["ChipDetails", "chip_details", "extract_chip", "face_chip"]

Image = npt.NDArray[np.uint8]

# dlib's mean face for the 5-point predictor, in the unit square of an unpadded chip, in the
# predictor's point order (see the module docstring).
_MEAN_FACE_5 = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)

# The 5-tap binomial kernel of dlib's pyramid_down<2>, and a 1-tap pass-through for the other
# axis of a separable filter.
_GAUSS_5 = np.array([1, 4, 6, 4, 1], dtype=np.float32)
_IDENTITY_1 = np.ones(1, dtype=np.float32)

# A rectangle as dlib's drectangle holds it: left, top, right, bottom, all inclusive, so an
# N-pixel-wide rectangle has right - left == N - 1.
Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class ChipDetails:
    """Where a chip lies in the image: dlib's `chip_details`, field for field.

    `rect` is the unrotated chip rectangle in image pixels (left, top, right, bottom,
    inclusive); the chip is that rectangle turned by `angle` radians about its centre and
    sampled onto `rows` x `cols` pixels. Kept in dlib's form rather than as a 2x3 matrix
    because the extraction (pyramid depth, crop margin, per-level rectangle) is defined on it.
    """

    rect: Rect
    angle: float
    rows: int
    cols: int

    @property
    def pyramid_levels(self) -> int:
        """How many times extract_chip halves the image before sampling (dlib's rule).

        One more halving for every factor of about two by which the face's rectangle exceeds
        the chip: 0 up to a rectangle of about 2 x size pixels a side.
        """
        levels = 0
        down = _rect_down(self.rect)
        while _area(down) > self.rows * self.cols:
            down = _rect_down(down)
            levels += 1
        return levels


def chip_details(parts: npt.ArrayLike, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """dlib's `get_face_chip_details` for a 5-point shape: the chip rectangle and angle.

    `parts` is (5, 2) x, y in image pixels, in the 5-point predictor's order.
    """
    points = np.asarray(parts, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks as a (5, 2) array, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks must be finite")
    if size < 1:
        raise ValueError(f"chip size must be at least 1, got {size}")
    if not padding >= 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    # dlib's Python binding takes padding as a C float; 0.25 survives that, 0.2 does not, and
    # the difference moves the chip by a fraction of a pixel.
    pad = float(np.float32(padding))
    template = [
        (((pad + x) / (2 * pad + 1)) * size, ((pad + y) / (2 * pad + 1)) * size)
        for x, y in _MEAN_FACE_5
    ]
    m, t = _similarity_transform(template, [(float(x), float(y)) for x, y in points])

    # The similarity transform is kept as angle + scale + a centred rectangle, exactly as
    # dlib's chip_details(chip_points, img_points, dims) constructor does; that rectangle is
    # one pixel narrower than size*scale (centered_drect subtracts 1), which is the "slightly
    # smaller width" the chip is cut at.
    px, py = m[0][0], m[1][0]
    angle = math.atan2(py, px)
    scale = math.sqrt(px * px + py * py)
    cx_chip, cy_chip = size / 2.0, size / 2.0
    cx = m[0][0] * cx_chip + m[0][1] * cy_chip + t[0]
    cy = m[1][0] * cx_chip + m[1][1] * cy_chip + t[1]
    half = (size * scale - 1) / 2
    rect = (cx - half, cy - half, cx + half, cy + half)
    return ChipDetails(rect=rect, angle=angle, rows=size, cols=size)


def chip_template_points(size: int = 150, padding: float = 0.25) -> npt.NDArray[np.float32]:
    """Where the 5 points of dlib's mean face land on a chip of this size and padding.

    Used to treat an already aligned chip (a "prenormalized" photo) as a face whose points are
    known, e.g. to cut the differently padded chips of the gender and age models from it.
    """
    pad = float(np.float32(padding))
    return np.array(
        [
            (((pad + x) / (2 * pad + 1)) * size, ((pad + y) / (2 * pad + 1)) * size)
            for x, y in _MEAN_FACE_5
        ],
        dtype=np.float32,
    )


def extract_chip(image: npt.ArrayLike, details: ChipDetails) -> Image:
    """dlib's `extract_image_chip` with bilinear interpolation, for one chip.

    `image` is HxWx3 uint8 (RGB, or any channel order: channels are independent) or HxW
    greyscale; the chip has the same channel layout, `details.rows` x `details.cols`.
    """
    img = _as_image(image)
    rows, cols = details.rows, details.cols
    if rows < 1 or cols < 1:
        raise ValueError(f"chip must have at least one pixel, got {rows}x{cols}")
    rect, angle = details.rect, details.angle
    if _is_empty(rect):
        raise ValueError(f"chip rectangle is empty: {rect}")

    # dlib skips resampling when the chip is an axis-aligned 1:1 copy; landmarks from a real
    # face never give exactly that, but the replica follows the same branch.
    if angle == 0 and rows == _height(rect) and cols == _width(rect):
        return _copy_chip(img, _round_rect(rect), rows, cols)

    # How many pyramid halvings keep the source rectangle at no more than the chip's pixel
    # count, and how much margin to crop around the face so the Gaussian taps at the crop edge
    # never reach pixels that matter (2 px, doubled plus 2 per level).
    chip_pixels = rows * cols
    grow = 2.0
    for _ in range(details.pyramid_levels):
        grow = grow * 2 + 2

    corners = _rotated_corners(rect, angle)
    xs = [p[0] for p in corners]
    ys = [p[1] for p in corners]
    height, width = img.shape[:2]
    grown: Rect = (
        max(min(xs) - grow, 0.0),
        max(min(ys) - grow, 0.0),
        min(max(xs) + grow, width - 1.0),
        min(max(ys) + grow, height - 1.0),
    )
    crop = _round_rect(grown)
    if crop is None:
        # The chip lies wholly outside the image: dlib's crop is empty and every sample is 0.
        crop = (0, 0, -1, -1)
    crop_left, crop_top, crop_right, crop_bottom = crop

    # The level to sample from is decided on the rectangle in crop coordinates; it equals
    # pyramid_levels - 1 up to rounding, and like dlib we trust this second count.
    level_rect: Rect = (
        rect[0] - crop_left,
        rect[1] - crop_top,
        rect[2] - crop_left,
        rect[3] - crop_top,
    )
    level = -1
    while _area(_rect_down(level_rect)) > chip_pixels:
        level += 1
        level_rect = _rect_down(level_rect)

    transform = _chip_to_source(level_rect, angle, rows, cols)
    if level < 0:
        # Sampled straight from the image through a window on the crop: the same samples as
        # sampling a copy of the crop, without the copy.
        window = (crop_left, crop_top, crop_right - crop_left + 1, crop_bottom - crop_top + 1)
        return _sample_bilinear(img, window, transform, rows, cols)
    source = _pyramid_down(img[crop_top : crop_bottom + 1, crop_left : crop_right + 1])
    for _ in range(level):
        source = _pyramid_down(source)
    height, width = source.shape[:2]
    return _sample_bilinear(source, (0, 0, width, height), transform, rows, cols)


def face_chip(
    image: npt.ArrayLike, parts: npt.ArrayLike, size: int = 150, padding: float = 0.25
) -> Image:
    """`dlib.get_face_chip(image, shape, size, padding)` for a 5-point shape."""
    return extract_chip(image, chip_details(parts, size=size, padding=padding))


# --- geometry, in dlib's conventions ----------------------------------------------------------


def _similarity_transform(
    src: list[tuple[float, float]], dst: list[tuple[float, float]]
) -> tuple[list[list[float]], tuple[float, float]]:
    """Least-squares similarity src -> dst (Umeyama 1991, eqs. 34-43), as dlib computes it.

    Returns (2x2 matrix, translation). Sums run in point order like dlib's loops; with NumPy's
    SVD in place of dlib's the chip rectangle agrees with dlib's to about 1e-13 px.
    """
    n = len(src)
    mfx = mfy = mtx = mty = 0.0
    for (fx, fy), (tx, ty) in zip(src, dst, strict=True):
        mfx += fx
        mfy += fy
        mtx += tx
        mty += ty
    mfx /= n
    mfy /= n
    mtx /= n
    mty /= n

    sigma_from = 0.0
    cov = np.zeros((2, 2))
    for (fx, fy), (tx, ty) in zip(src, dst, strict=True):
        dfx, dfy, dtx, dty = fx - mfx, fy - mfy, tx - mtx, ty - mty
        sigma_from += dfx * dfx + dfy * dfy
        cov += np.array([[dtx * dfx, dtx * dfy], [dty * dfx, dty * dfy]])
    sigma_from /= n
    cov /= n

    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det_cov = float(np.linalg.det(cov))
    if det_cov < 0 or (det_cov == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        # A reflection fits better than any rotation: flip the weaker axis, as dlib does.
        if d[1] < d[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = 1.0 if sigma_from == 0 else 1.0 / sigma_from * float(np.sum(d * np.diag(s)))
    m = c * r
    t = (
        mtx - (m[0, 0] * mfx + m[0, 1] * mfy),
        mty - (m[1, 0] * mfx + m[1, 1] * mfy),
    )
    return [[float(m[0, 0]), float(m[0, 1])], [float(m[1, 0]), float(m[1, 1])]], t


def _is_empty(rect: Rect) -> bool:
    return rect[1] > rect[3] or rect[0] > rect[2]


def _width(rect: Rect) -> float:
    return 0.0 if _is_empty(rect) else rect[2] - rect[0] + 1


def _height(rect: Rect) -> float:
    return 0.0 if _is_empty(rect) else rect[3] - rect[1] + 1


def _area(rect: Rect) -> float:
    return _width(rect) * _height(rect)


def _rect_down(rect: Rect) -> Rect:
    """dlib's pyramid_down<2>::rect_down: corners halved and shifted by (1.25, 0.75).

    dlib's own coordinate convention for a level; it is not quite where the filter centres its
    output (see _pyramid_down), but the replica has to sample where dlib samples.
    """
    return (rect[0] / 2.0 - 1.25, rect[1] / 2.0 - 0.75, rect[2] / 2.0 - 1.25, rect[3] / 2.0 - 0.75)


def _round_rect(rect: Rect) -> tuple[int, int, int, int] | None:
    """drectangle -> rectangle (each side to the nearest integer); None when empty."""
    left, top, right, bottom = (math.floor(v + 0.5) for v in rect)
    if left > right or top > bottom:
        return None
    return left, top, right, bottom


def _rotate_point(
    center: tuple[float, float], point: tuple[float, float], angle: float
) -> tuple[float, float]:
    sin_a, cos_a = math.sin(angle), math.cos(angle)
    x, y = point[0] - center[0], point[1] - center[1]
    return cos_a * x - sin_a * y + center[0], sin_a * x + cos_a * y + center[1]


def _rotated_corners(rect: Rect, angle: float) -> list[tuple[float, float]]:
    """tl, tr, bl, br of `rect` turned by `angle` about its centre."""
    left, top, right, bottom = rect
    center = ((left + right) / 2.0, (top + bottom) / 2.0)
    return [
        _rotate_point(center, corner, angle)
        for corner in ((left, top), (right, top), (left, bottom), (right, bottom))
    ]


def _chip_to_source(rect: Rect, angle: float, rows: int, cols: int) -> npt.NDArray[np.float64]:
    """2x3 affine taking chip pixel (x, y) to source pixel: chip corners onto rect's corners.

    dlib solves this with find_affine_transform (Q * pinv(P)) on three corner pairs; so do we,
    which also covers a one-pixel-wide chip the same way.
    """
    tl, tr, bl, _ = _rotated_corners(rect, angle)
    chip_corners = np.array([[0.0, cols - 1.0, 0.0], [0.0, 0.0, rows - 1.0], [1.0, 1.0, 1.0]])
    targets = np.array([[tl[0], tr[0], bl[0]], [tl[1], tr[1], bl[1]]])
    result: npt.NDArray[np.float64] = targets @ np.linalg.pinv(chip_corners)
    return result


# --- pixels -----------------------------------------------------------------------------------


def _as_image(image: npt.ArrayLike) -> Image:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")
    # The sampler indexes the flat buffer; a no-op for the usual C-contiguous decode.
    return np.ascontiguousarray(img)


def _copy_chip(
    img: Image, location: tuple[int, int, int, int] | None, rows: int, cols: int
) -> Image:
    """dlib's basic_extract_image_chip: a plain crop, zero where it leaves the image."""
    chip = np.zeros((rows, cols, *img.shape[2:]), dtype=np.uint8)
    if location is None:
        return chip
    left, top, right, bottom = location
    height, width = img.shape[:2]
    src_l, src_t = max(left, 0), max(top, 0)
    src_r, src_b = min(right, width - 1), min(bottom, height - 1)
    if src_l <= src_r and src_t <= src_b:
        chip[src_t - top : src_b - top + 1, src_l - left : src_r - left + 1] = img[
            src_t : src_b + 1, src_l : src_r + 1
        ]
    return chip


def _pyramid_down(img: Image) -> Image:
    """dlib's pyramid_down<2>: a [1 4 6 4 1]^2 / 256 Gaussian, keeping every other pixel.

    Output pixel (r, c) is centred on input (2r + 2, 2c + 2); the size is ((h-3)/2, (w-3)/2)
    rounded down, and images of 8 pixels or fewer on a side vanish. dlib sums in integers and
    truncates the final /256. We filter in float32 with OpenCV, which is exact here: every
    partial sum is an integer below 65536, far inside float32's 2**24. cv2.pyrDown is not
    usable: it rounds instead of truncating and centres its output on (2r, 2c).
    """
    height, width = img.shape[:2]
    if height <= 8 or width <= 8:
        return img[:0, :0]
    out_h, out_w = (height - 3) // 2, (width - 3) // 2
    rows = cv2.sepFilter2D(img, cv2.CV_32F, _GAUSS_5, _IDENTITY_1)[:, 2 : 2 + 2 * out_w : 2]
    both = cv2.sepFilter2D(rows, -1, _IDENTITY_1, _GAUSS_5)[2 : 2 + 2 * out_h : 2]
    # Scaling by 1/256 is exact in binary, and the cast truncates like dlib's integer divide.
    down: Image = (both * (1.0 / 256)).astype(np.uint8)
    return down


def _sample_bilinear(
    source: Image,
    window: tuple[int, int, int, int],
    transform: npt.NDArray[np.float64],
    rows: int,
    cols: int,
) -> Image:
    """dlib's transform_image with interpolate_bilinear and a black background.

    `window` is (left, top, width, height) of the part of `source` that dlib's sampler sees
    (its sub_image); `transform` maps chip pixels into window coordinates.
    """
    channels = 1 if source.ndim == 2 else source.shape[2]
    win_left, win_top, width, height = window
    chip = np.zeros((channels, rows * cols), dtype=np.uint8)
    if width >= 2 and height >= 2:
        xs = np.arange(cols, dtype=np.float64)[None, :]
        ys = np.arange(rows, dtype=np.float64)[:, None]
        px = (transform[0, 0] * xs + transform[0, 1] * ys + transform[0, 2]).ravel()
        py = (transform[1, 0] * xs + transform[1, 1] * ys + transform[1, 2]).ravel()
        left = np.floor(px)
        top = np.floor(py)
        # A sample needs its whole 2x2 neighbourhood inside the window, else it is 0: this is
        # what fills the chip with black where it runs past the image edge.
        inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
        all_inside = bool(inside.all())
        if all_inside or inside.any():
            # Every pixel is computed (outside ones from a clamped neighbourhood) and the
            # outside ones zeroed afterwards: cheaper than compacting with the mask. Gathers go
            # channel by channel from the flat buffer, many times faster than pixel rows.
            row_step = source.shape[1] * channels
            base = (np.clip(top, 0, height - 2).astype(np.intp) + win_top) * row_step + (
                np.clip(left, 0, width - 2).astype(np.intp) + win_left
            ) * channels
            flat = source.reshape(-1)
            lr = px - left
            tb = py - top
            not_lr = 1 - lr
            not_tb = 1 - tb
            for channel in range(channels):
                at = base + channel
                # (1-tb)*((1-lr)*tl + lr*tr) + tb*((1-lr)*bl + lr*br), operation for operation
                # as dlib evaluates it in double, so the truncation below sees the same value.
                upper = not_lr * flat[at]
                upper += lr * flat[at + channels]
                lower = not_lr * flat[at + row_step]
                lower += lr * flat[at + row_step + channels]
                upper *= not_tb
                lower *= tb
                upper += lower
                if not all_inside:
                    upper *= inside
                # dlib assigns the double to uint8 with a cast: truncation, not rounding. The
                # weights are a convex combination, so the value is already within 0..255.
                chip[channel] = upper.astype(np.uint8)
    if source.ndim == 2:
        return chip.reshape(rows, cols)
    return np.ascontiguousarray(chip.T).reshape(rows, cols, channels)

"""Face quality: how usable a detected face is for recognition, as one number.

Like the seed's `detection_score` with its quality estimator, 0 is a frontal, upright, sharp,
well-exposed face of useful size, and worse faces score more negative. No packaged face-quality
model exists, so the score is a documented sum of penalties, each 1.0 at a clearly bad value:

    quality = log(detector score)
              - (roll / 30 degrees)^2
              - (yaw proxy)^2            nose offset from the eye midline, in half eye distances
              - max(0, 1 - eye distance / 40 px)^2        FindFace's minimum pupil distance
              - max(0, 1 - sharpness / 60)^2              variance of the Laplacian of the chip
              - max(0, |mean brightness - 128| / 96 - 0.25)^2   under- or over-exposure

A client can keep faces above, say, -1 for enrollment and accept lower ones for search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

MIN_EYE_DISTANCE = 40.0
SHARP_LAPLACIAN_VARIANCE = 60.0
ROLL_SCALE_DEGREES = 30.0


@dataclass(frozen=True)
class QualityParts:
    detector: float
    roll: float
    yaw: float
    size: float
    blur: float
    exposure: float

    @property
    def score(self) -> float:
        return self.detector - self.roll - self.yaw - self.size - self.blur - self.exposure


def assess(
    detector_score: float,
    landmarks: npt.NDArray[np.float32],
    chip: npt.NDArray[np.uint8],
) -> QualityParts:
    """Quality from MTCNN's five points (image pixels) and the face's aligned 150x150 chip."""
    left_eye, right_eye, nose = landmarks[0], landmarks[1], landmarks[2]
    across = right_eye - left_eye
    eye_distance = float(np.hypot(*across))
    roll = math.degrees(math.atan2(float(across[1]), float(across[0])))
    if eye_distance > 0:
        unit = across / eye_distance
        midpoint = (left_eye + right_eye) / 2
        offset = float(np.dot(nose - midpoint, unit))
        yaw = offset / (eye_distance / 2)
    else:
        yaw = 1.0
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    brightness = float(grey.mean())
    exposure = max(0.0, abs(brightness - 128.0) / 96.0 - 0.25)
    return QualityParts(
        detector=math.log(max(detector_score, 1e-6)),
        roll=(roll / ROLL_SCALE_DEGREES) ** 2,
        yaw=yaw**2,
        size=max(0.0, 1.0 - eye_distance / MIN_EYE_DISTANCE) ** 2,
        blur=max(0.0, 1.0 - sharpness / SHARP_LAPLACIAN_VARIANCE) ** 2,
        exposure=exposure**2,
    )

"""The motion gate: cheap frame differencing that decides whether a frame is worth detecting.

The frame is scaled by `scale`, turned grey and blurred; the share of pixels whose brightness
changed by more than PIXEL_DELTA since the previous frame is the motion intensity. Frames under
`md-threshold` are skipped (0 disables the gate), unless faces are being tracked.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

PIXEL_DELTA = 25

Frame = npt.NDArray[np.uint8]


class MotionDetector:
    def __init__(self, threshold: float, scale: float) -> None:
        self.threshold = threshold
        self.scale = scale
        self._previous: Frame | None = None

    def intensity(self, frame: Frame) -> float:
        """Share of changed pixels since the previous frame (1.0 for the first)."""
        small: Frame = frame
        if self.scale != 1.0:
            small = np.asarray(
                cv2.resize(frame, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
            )
        grey: Frame = small
        if small.ndim == 3:
            grey = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
        grey = np.asarray(cv2.GaussianBlur(grey, (5, 5), 0), dtype=np.uint8)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return 1.0
        changed = cv2.absdiff(grey, previous) > PIXEL_DELTA
        return float(np.count_nonzero(changed)) / changed.size

    def moved(self, frame: Frame) -> bool:
        if self.threshold <= 0:
            return True
        return self.intensity(frame) >= self.threshold

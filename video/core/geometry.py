"""Boxes and regions in frame pixels."""

from __future__ import annotations

import re
from dataclasses import dataclass

_GEOMETRY = re.compile(r"^\s*(\d+)x(\d+)\+(\d+)\+(\d+)\s*$")
# WxH; the reference writes the x as a Cyrillic letter in places: that and the multiplication
# sign count too.
_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX\u00d7\u0445]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Region:
    """A rectangle as X geometry says it: WxH+X+Y."""

    width: int
    height: int
    x: int
    y: int

    def contains(self, box: Box) -> bool:
        return (
            box.x1 >= self.x
            and box.y1 >= self.y
            and box.x2 <= self.x + self.width
            and box.y2 <= self.y + self.height
        )

    def zoomed(self, factor: float) -> Region:
        """The region in the pixels of the frame resized by factor."""
        x, y = int(self.x * factor), int(self.y * factor)
        return Region(
            max(1, round((self.x + self.width) * factor) - x),
            max(1, round((self.y + self.height) * factor) - y),
            x,
            y,
        )


def parse_region(value: str | list[int] | tuple[int, ...]) -> Region:
    """`WxH+X+Y`, or [W, H, X, Y] as the camera API gives it."""
    if isinstance(value, list | tuple):
        numbers = [int(v) for v in value]
        if len(numbers) != 4:
            raise ValueError(f"{value!r} is not [W, H, X, Y]")
    else:
        match = _GEOMETRY.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not WxH+X+Y")
        numbers = [int(g) for g in match.groups()]
    width, height, x, y = numbers
    if width <= 0 or height <= 0 or x < 0 or y < 0:
        raise ValueError(f"{value!r} needs a positive size and a non-negative position")
    return Region(width, height, x, y)


def parse_resolution(text: str) -> tuple[int, int] | None:
    """`WxH` as (width, height); None for an empty value. ValueError when it is not one."""
    if not text.strip():
        return None
    match = _RESOLUTION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not WxH")
    width, height = int(match.group(1)), int(match.group(2))
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ValueError(f"{text!r}: each side must be 16 to 8192 pixels")
    return width, height


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def iou(self, other: Box) -> float:
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / (self.width * self.height + other.width * other.height - inter)

    def scaled(self, factor: float, frame_width: int, frame_height: int) -> Box:
        """The box grown (or shrunk) about its centre by factor, kept inside the frame."""
        cx, cy = self.center
        half_w, half_h = self.width * factor / 2, self.height * factor / 2
        return Box(
            max(0.0, cx - half_w),
            max(0.0, cy - half_h),
            min(float(frame_width), cx + half_w),
            min(float(frame_height), cy + half_h),
        )

    def zoomed(self, factor: float) -> Box:
        """The box in the pixels of the frame resized by factor."""
        return Box(self.x1 * factor, self.y1 * factor, self.x2 * factor, self.y2 * factor)

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)

    def rounded(self) -> tuple[int, int, int, int]:
        return round(self.x1), round(self.y1), round(self.x2), round(self.y2)

"""The seed's 0..1 confidence scale on our model's Euclidean distances, both ways.

The seed defines its threshold presets by false-accept rates on its own test set: strict 0.7834
(FAR 1e-5), medium 0.6616 (1e-3), low 0.5690 (1e-1), and a default of 0.75. We measured the
distances at which our model (dlib's ResNet, 128 values) reaches those rates on the identity-
labelled photos in shared/data/faces (`bench/confidence_mapping.py`: 662 faces of 76 people,
2,823 same-person and 215,968 different-person pairs): FAR 1e-5 at 0.381 (indicative: it rests
on two pairs), 1e-3 at 0.499, 1e-1 at 0.691. Confidence is piecewise linear in distance through
those anchors, with distance 0 at confidence 1 and distance 1.5 (beyond any pair we saw) at 0,
so each preset selects the matches at the false-accept rate the seed documents. The default
0.75 falls at distance 0.413, between strict and medium, as it does in the seed.
"""

from __future__ import annotations

import numpy as np

PRESETS = {"strict": 0.7834, "medium": 0.6616, "low": 0.5690, "none": 0.0}
DEFAULT = 0.75

# (distance, confidence), distance ascending.
_ANCHORS = np.array(
    [(0.0, 1.0), (0.381, 0.7834), (0.499, 0.6616), (0.691, 0.5690), (1.5, 0.0)],
    dtype=np.float64,
)


def confidence_of(distance: float) -> float:
    """Confidence (1 for identical vectors, 0 at distance 1.5 and beyond) of a distance."""
    return float(np.interp(distance, _ANCHORS[:, 0], _ANCHORS[:, 1]))


def distance_for(confidence: float) -> float:
    """The largest distance whose confidence is at least `confidence` (0..1).

    Confidence 0 means no limit (`inf`), as the seed's `none` preset does.
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be within 0..1, got {confidence}")
    if confidence == 0.0:
        return float("inf")
    return float(np.interp(confidence, _ANCHORS[::-1, 1], _ANCHORS[::-1, 0]))


def threshold(value: str | float | None) -> float:
    """A threshold as the API takes it: a preset name, a number in 0..1, or None (default)."""
    if value is None:
        return DEFAULT
    if isinstance(value, str) and value.strip().lower() in PRESETS:
        return PRESETS[value.strip().lower()]
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ValueError(
            f"threshold must be a preset ({', '.join(PRESETS)}) or a number within 0..1, "
            f"got {value!r}"
        )
    return number

"""Face tracks and the choice of which snapshots to post.

Detections of consecutive processed frames are joined into tracks by box overlap (IoU), or
by a small shift of the box's centre. A track ends when it has not been seen for `LOST_AFTER`
seconds of video. What gets posted:

- real-time mode: a snapshot as soon as its score reaches the track's threshold, which starts at
  `min-score` and rises to the posted score plus `rt-score-step` after each post; posts of one
  track are at least `rt-delay` ms apart; with `rt-refresh` the threshold falls back to
  `min-score` that long after the last post; a new track starts again at `min-score`;
- offline mode: when the track ends, its best snapshot (highest score);

and in both modes only snapshots with score >= `min-score`, direction score >= `min-dir-score`,
a box inside `roi` and sides within `min-face-size`/`max-face-size`. With `post-uniq`, a post
is dropped when `uc-max-dup` posts were already made within `uc-max-time-diff` seconds at
centres no more than `uc-max-avg-shift` pixels from its own.

Scores follow the seed's scale: 0 is a frontal, sharp face and worse faces score more
negative. `score` is the extractor's face quality; `direction_score` = -DIRECTION_SCALE *
(yaw^2 + (roll / 30 degrees)^2) from the five landmarks (0 frontal, -10 about 35 degrees off).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from facegrid.video.core.geometry import Box
from facegrid.video.core.options import Options

LOST_AFTER = 1.5  # seconds of video without the face
MATCH_IOU = 0.3
# A detection also continues a track when its centre moved less than this share of the face's
# size (fast movement, or a box that grew or shrank, gives a low IoU).
MATCH_SHIFT = 1.0
DIRECTION_SCALE = 20.0
# Centres kept per track for draw-track's path.
PATH_LENGTH = 50


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    # Left eye, right eye, nose, left and right mouth corner.
    landmarks: tuple[tuple[float, float], ...] = ()

    @property
    def direction_score(self) -> float:
        return direction_score(self.landmarks)

    def zoomed(self, factor: float) -> Detection:
        """The detection in the pixels of the frame resized by factor."""
        return Detection(
            self.box.zoomed(factor),
            self.score,
            tuple((x * factor, y * factor) for x, y in self.landmarks),
        )


def direction_score(landmarks: Sequence[tuple[float, float]]) -> float:
    if len(landmarks) < 3:
        return 0.0
    (lx, ly), (rx, ry), (nx, ny) = landmarks[0], landmarks[1], landmarks[2]
    across_x, across_y = rx - lx, ry - ly
    eye_distance = math.hypot(across_x, across_y)
    if eye_distance == 0:
        return -DIRECTION_SCALE * 4
    roll = math.degrees(math.atan2(across_y, across_x)) / 30
    offset = ((nx - (lx + rx) / 2) * across_x + (ny - (ly + ry) / 2) * across_y) / eye_distance
    yaw = offset / (eye_distance / 2)
    return -DIRECTION_SCALE * (yaw * yaw + roll * roll)


def _closeness(track: Box, detection: Box) -> float:
    """How well a detection continues a track: its IoU when that is at least MATCH_IOU, else
    a small positive value when the centre moved less than MATCH_SHIFT face sizes, else 0."""
    overlap = track.iou(detection)
    if overlap >= MATCH_IOU:
        return overlap
    size = max(track.width, track.height, 1.0)
    (tx, ty), (dx, dy) = track.center, detection.center
    shift = math.hypot(tx - dx, ty - dy) / size
    return (MATCH_SHIFT - shift) * MATCH_IOU / MATCH_SHIFT if shift < MATCH_SHIFT else 0.0


@dataclass(frozen=True)
class Post:
    """A snapshot to post: the frame it is on (opaque here) and the face on it."""

    track: int
    frame: Any
    frame_time: float
    detection: Detection
    # The box to post (bbox-scale applied, inside the frame).
    box: Box


@dataclass(frozen=True)
class TrackMark:
    """A track as draw-track shows it: its id, box and recent centres, in frame pixels."""

    id: int
    box: Box
    path: tuple[tuple[float, float], ...]


@dataclass
class _Track:
    id: int
    box: Box
    seen_at: float
    threshold: float
    last_post: float | None = None
    best: Post | None = None
    posts: int = 0
    # The box centres of its last PATH_LENGTH detections.
    path: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=PATH_LENGTH))


class Tracker:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.frame_size = (0, 0)  # width, height: keeps bbox-scale inside the frame
        self._tracks: list[_Track] = []
        self._next_id = 1
        # (time, x, y) of recent posts, for post-uniq.
        self._recent: deque[tuple[float, float, float]] = deque()
        self._newest = -math.inf

    @property
    def active(self) -> int:
        return len(self._tracks)

    def marks(self) -> list[TrackMark]:
        """The tracks now, for drawing."""
        return [TrackMark(t.id, t.box, tuple(t.path)) for t in self._tracks]

    def update(self, frame: Any, time: float, detections: Sequence[Detection]) -> list[Post]:
        """One processed frame (time in seconds of video): the posts it causes."""
        posts: list[Post] = []
        wanted = [d for d in detections if self._sized(d.box)]
        unmatched = set(range(len(wanted)))
        pairs = sorted(
            (
                (_closeness(track.box, d.box), t, i)
                for t, track in enumerate(self._tracks)
                for i, d in enumerate(wanted)
            ),
            reverse=True,
        )
        matched_tracks: set[int] = set()
        assignments: list[tuple[_Track, Detection]] = []
        for closeness, t, i in pairs:
            if closeness <= 0:
                break
            if t in matched_tracks or i not in unmatched:
                continue
            matched_tracks.add(t)
            unmatched.discard(i)
            assignments.append((self._tracks[t], wanted[i]))
        for i in sorted(unmatched, key=lambda i: -wanted[i].score):
            if len(self._tracks) >= self.options.max_persons:
                break
            track = _Track(self._next_id, wanted[i].box, time, self.options.min_score)
            self._next_id += 1
            self._tracks.append(track)
            assignments.append((track, wanted[i]))
        for track, detection in assignments:
            track.box = detection.box
            track.seen_at = time
            track.path.append(detection.box.center)
            post = self._consider(track, frame, time, detection)
            if post is not None:
                posts.append(post)
        posts += self._end(lambda t: time - t.seen_at > LOST_AFTER)
        return posts

    def finish(self) -> list[Post]:
        """The stream ended: every track ends."""
        return self._end(lambda _t: True)

    def _sized(self, box: Box) -> bool:
        o = self.options
        if o.min_face_size and min(box.width, box.height) < o.min_face_size:
            return False
        return not (o.max_face_size and max(box.width, box.height) > o.max_face_size)

    def _eligible(self, detection: Detection) -> bool:
        o = self.options
        if detection.score < o.min_score or detection.direction_score < o.min_dir_score:
            return False
        return o.roi is None or o.roi.contains(detection.box)

    def _consider(
        self, track: _Track, frame: Any, time: float, detection: Detection
    ) -> Post | None:
        if not self._eligible(detection):
            return None
        o = self.options
        post = Post(track.id, frame, time, detection, self._posted_box(detection.box))
        if not o.realtime:
            if track.best is None or detection.score > track.best.detection.score:
                track.best = post
            return None
        if (
            o.rt_refresh > 0
            and track.last_post is not None
            and (time - track.last_post) * 1000 >= o.rt_refresh
        ):
            track.threshold = o.min_score
        if detection.score < track.threshold:
            return None
        if track.last_post is not None and (time - track.last_post) * 1000 < o.rt_delay:
            return None
        if not self._unique(post):
            return None
        track.threshold = detection.score + o.rt_score_step
        track.last_post = time
        track.posts += 1
        return post

    def _end(self, ended: Any) -> list[Post]:
        posts = []
        for track in [t for t in self._tracks if ended(t)]:
            self._tracks.remove(track)
            if track.best is not None and self._unique(track.best):
                posts.append(track.best)
        return posts

    def _posted_box(self, box: Box) -> Box:
        width, height = self.frame_size
        if self.options.bbox_scale == 1.0 or not width:
            return box
        return box.scaled(self.options.bbox_scale, width, height)

    def _unique(self, post: Post) -> bool:
        """post-uniq: at most uc-max-dup posts per place within the time window, on either
        side of the post's time: offline posts carry their best frame's time, which may come
        before posts already made. (The seed also compared the faces; here posts in the same
        place within the window count as one person's.)"""
        o = self.options
        if not o.post_uniq:
            return True
        window = o.uc_max_time_diff
        self._newest = max(self._newest, post.frame_time)
        self._recent = deque(r for r in self._recent if self._newest - r[0] <= window)
        cx, cy = post.detection.box.center
        close = sum(
            1
            for t, x, y in self._recent
            if abs(post.frame_time - t) <= window
            and math.hypot(cx - x, cy - y) <= o.uc_max_avg_shift
        )
        if close >= o.uc_max_dup:
            return False
        self._recent.append((post.frame_time, cx, cy))
        return True

"""Tracks and the choice of posts, on made-up detections (the clips test the whole pipeline)."""

from __future__ import annotations

from facegrid.video.core.geometry import Box, parse_region
from facegrid.video.core.options import build
from facegrid.video.core.tracking import Detection, Tracker

FRONTAL = ((40.0, 40.0), (60.0, 40.0), (50.0, 50.0), (42.0, 60.0), (58.0, 60.0))


def _options(**values: str) -> object:
    return build({k: (v, f"--{k}") for k, v in {"source": "x.mp4", **values}.items()})


def _face(x: float, score: float, size: float = 60.0) -> Detection:
    landmarks = tuple((px + x, py) for px, py in FRONTAL)
    return Detection(Box(x, 20, x + size, 20 + size), score, landmarks)


def test_offline_posts_each_tracks_best_face_when_it_ends() -> None:
    tracker = Tracker(_options(realtime="0"))  # type: ignore[arg-type]
    posts = []
    for i, score in enumerate([-3.0, -1.0, -2.0]):
        posts += tracker.update(f"frame{i}", i * 0.1, [_face(10 + i, score), _face(300, -4.0)])
    assert posts == []  # nothing while the faces are in view
    posts += tracker.update("empty", 2.0, [])  # both gone for longer than LOST_AFTER
    assert sorted((p.track, p.detection.score, p.frame) for p in posts) == [
        (1, -1.0, "frame1"),
        (2, -4.0, "frame0"),
    ]


def test_realtime_posts_rising_quality_with_a_delay_and_a_fresh_start_per_track() -> None:
    options = _options(realtime="1", rt_score_step="1", rt_delay="500", min_score="-7")
    tracker = Tracker(options)  # type: ignore[arg-type]
    scores = [-6.0, -5.5, -4.9, -4.0, -3.5, -1.0]
    times = [0.0, 0.1, 0.2, 0.3, 0.9, 1.0]
    posted = []
    for t, score in zip(times, scores, strict=True):
        posted += [p.detection.score for p in tracker.update(t, t, [_face(10, score)])]
    # -6 posted; -5.5 and -4.9 are below -6 + 1; -4.0 is too soon after -6 (500 ms);
    # -3.5 at 0.9 s passes; -1.0 at 1.0 s is too soon again.
    assert posted == [-6.0, -3.5]
    tracker.update(5.0, 5.0, [])  # the face leaves: the threshold resets with the next track
    assert [p.detection.score for p in tracker.update(6.0, 6.0, [_face(10, -6.5)])] == [-6.5]


def test_only_eligible_faces_are_posted() -> None:
    options = _options(
        realtime="1", min_score="-5", min_face_size="50", roi="200x200+0+0", min_dir_score="-5"
    )
    tracker = Tracker(options)  # type: ignore[arg-type]
    turned = Detection(
        Box(10, 20, 70, 80), -1.0, ((40, 40), (60, 40), (68, 50), (42, 60), (58, 60))
    )
    candidates = [
        _face(10, -6.0),  # below min-score
        _face(500, -1.0),  # outside the roi
        _face(10, -1.0, size=30),  # smaller than min-face-size
        turned,  # the nose far off the eyes' midline
    ]
    for i, candidate in enumerate(candidates):
        assert tracker.update(i, 10.0 * i, [candidate]) == [], candidate
    assert len(tracker.update(99, 99.0, [_face(10, -1.0)])) == 1
    assert parse_region("200x200+0+0").contains(Box(10, 20, 70, 80))


def test_post_uniq_limits_posts_per_place_and_window() -> None:
    options = _options(
        realtime="1",
        rt_score_step="0.1",
        post_uniq="1",
        uc_max_dup="2",
        uc_max_time_diff="1",
        uc_max_avg_shift="20",
    )
    tracker = Tracker(options)  # type: ignore[arg-type]
    posted = []
    for i in range(8):
        posted += tracker.update(i, i * 0.1, [_face(10, -5.0 + i * 0.5)])
    assert len(posted) == 2  # the rest fall in the same place within a second
    later = tracker.update(50, 2.0, [_face(10, 0.0)])
    assert len(later) == 1  # the window has passed


def test_post_uniq_counts_offline_posts_by_their_own_time() -> None:
    # Offline posts come when a track ends, with its best frame's time: a long track's post
    # can be older than a short one's posted before it, and only posts within the window of
    # its own time count against it.
    options = _options(
        realtime="0",
        post_uniq="1",
        uc_max_dup="1",
        uc_max_time_diff="1",
        uc_max_avg_shift="500",  # both faces below are in "the same place"
    )
    tracker = Tracker(options)  # type: ignore[arg-type]
    posts = []
    for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        long_track = _face(10, -1.0 if t == 1.0 else -3.0)  # its best frame at 1 s
        short_track = [_face(400, -2.0)] if t == 3.0 else []  # seen once, at 3 s
        posts += tracker.update(t, t, [long_track, *short_track])
    assert [p.frame_time for p in posts] == [3.0]  # the short track ended first
    posts += tracker.update(6.6, 6.6, [])  # the long one ends: its best is 2 s before 3 s
    assert [p.frame_time for p in posts] == [3.0, 1.0]


def test_tracks_follow_a_moving_face_and_respect_max_persons() -> None:
    tracker = Tracker(_options(realtime="0", max_persons="2"))  # type: ignore[arg-type]
    for i in range(10):  # 25 px per frame: IoU drops, the centre stays within a face size
        tracker.update(i, i * 0.04, [_face(10 + 25 * i, -1.0), _face(400, -1.0), _face(700, -1)])
    assert tracker.active == 2
    ended = tracker.finish()
    assert sorted(p.track for p in ended) == [1, 2]

"""`facegrid mass-enroll` end to end: prepare with every meta source, run against a real
`facegrid up` with real photos, summaries, reruns, --failed, and exactly-once under kill -9.

Runs are subprocesses (`python -m facegrid.bulk`), as a user runs them, so that kill -9 is real.
What was enrolled is always read back through the REST API.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from facegrid.bulk import cli
from facegrid.bulk.job import DONE, FAILED, PENDING, Job, JobError
from facegrid.bulk.runner import exclusive
from tests.bulk.bulkapi import NO_FACE, Api, chips


def mass_enroll(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "facegrid.bulk", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def run_args(api: Api, job: Path, gallery: str, *extra: str) -> list[str]:
    return [
        "--job", str(job), "run", "--api", api.url, "--token", api.token,
        "--gallery", gallery, "--stats-interval", "0.2", *extra,
    ]  # fmt: skip


def summary(output: str) -> dict[str, int]:
    """The reference's summary lines, as numbers."""
    numbers = {}
    for key, pattern in (
        ("found", r"Found (\d+) images in job file"),
        ("skipped", r"Skipped (\d+) already processed images"),
        ("succeeded", r"Successfully processed (\d+) images"),
        ("failed", r"Failed to process (\d+) images"),
    ):
        match = re.search(pattern, output)
        assert match, output
        numbers[key] = int(match[1])
    return numbers


def printed(job: Path, *extra: str) -> list[dict[str, Any]]:
    return json.loads(mass_enroll("--job", str(job), "print", *extra, check=True).stdout)


def copy_photos(folder: Path, photos: list[Path]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for photo in photos:
        copies.append(folder / photo.name)
        shutil.copy(photo, copies[-1])
    return copies


# -- prepare ----------------------------------------------------------------------------------


def prepare(job: Path, *args: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--job", str(job), "prepare", *args])
    assert exited.value.code == 0


def metas(job: Path) -> dict[str, str]:
    with Job(job) as j:
        return {Path(i.path).name: i.meta for i in j.images()}


def test_prepare_takes_meta_from_each_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = copy_photos(tmp_path / "subdir", chips(3))
    (tmp_path / "subdir" / "nested").mkdir()
    shutil.copy(photos[0], tmp_path / "subdir" / "nested" / "deep.png")
    photos[0].with_suffix(".txt").write_text("Phillip J. Fry\n")
    monkeypatch.chdir(tmp_path)

    prepare(tmp_path / "const.job", "--meta-const=Phillip J. Fry", "subdir/*.png")
    assert metas(tmp_path / "const.job") == {p.name: "Phillip J. Fry" for p in photos}
    out = capsys.readouterr().out
    assert "Looking for images matching 'subdir/*.png'" in out
    assert "3 files prepared for upload" in out
    assert f"3 files in job file {tmp_path / 'const.job'}" in out

    prepare(tmp_path / "companion.job", "--meta-companion=txt", "subdir/*.png")
    assert metas(tmp_path / "companion.job") == {
        photos[0].name: "Phillip J. Fry", photos[1].name: "", photos[2].name: ""
    }  # fmt: skip

    prepare(tmp_path / "name.job", "--meta-filename", "subdir/**/*.png")
    assert metas(tmp_path / "name.job") == {
        **{p.name: p.stem for p in photos}, "deep.png": "deep"
    }  # fmt: skip

    with open(tmp_path / "meta.csv", "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(
            [["Turanga Leela", f"subdir/{photos[0].name}"], ["Bender", "subdir/nested/deep.png"]]
        )
    prepare(tmp_path / "csv.job", "--meta-csv=meta.csv", "**/*.png")
    assert metas(tmp_path / "csv.job") == {
        photos[0].name: "Turanga Leela",
        photos[1].name: "",
        photos[2].name: "",
        "deep.png": "Bender",
    }

    # Split: parts of near-equal size that hold every image once.
    prepare(tmp_path / "part.job", "--split=3", "--meta-filename", "subdir/**/*.png")
    parts = [tmp_path / f"part-{k}.job" for k in (1, 2, 3)]
    sizes = []
    for part in parts:
        with Job(part) as j:
            sizes.append(j.count())
    assert sorted(sizes) == [1, 1, 2]
    assert not (tmp_path / "part.job").exists()

    # Preparing into an existing job adds new images only.
    capsys.readouterr()
    prepare(tmp_path / "const.job", "--meta-const=Other", "subdir/**/*.png")
    assert "4 files in job file" in capsys.readouterr().out
    assert metas(tmp_path / "const.job")[photos[0].name] == "Phillip J. Fry"


def test_prepare_refuses_two_meta_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--job", str(tmp_path / "j"), "prepare", "--meta-const=a", "--meta-filename"])
    assert exited.value.code == 2
    assert "use one of" in capsys.readouterr().err


def test_one_run_per_job_at_a_time(tmp_path: Path) -> None:
    job = tmp_path / "j.job"
    Job(job, create=True).close()
    with exclusive(job), pytest.raises(JobError, match="another run"), exclusive(job):
        pass


# -- run --------------------------------------------------------------------------------------


def test_run_enrolls_skips_and_retries_failed(tmp_path: Path, api: Api) -> None:
    gallery = api.new_gallery()
    photos = copy_photos(tmp_path / "in", chips(6))
    broken = tmp_path / "in" / "broken.png"
    broken.write_text("not an image")
    shutil.copy(NO_FACE, tmp_path / "in" / "coffee.png")
    job = tmp_path / "ffmassenroll.job"
    mass_enroll("--job", str(job), "prepare", "--meta-filename", f"{tmp_path}/in/*.png", check=True)

    first = mass_enroll(*run_args(api, job, gallery, "--parallel", "4", "--gender", "--age"))
    assert first.returncode == 1, first.stderr  # some images failed
    assert summary(first.stdout) == {"found": 8, "skipped": 0, "succeeded": 6, "failed": 2}
    progress = [line for line in first.stdout.splitlines() if "faces processed" in line]
    assert progress[-1].startswith("[8/8] faces processed (6 succeeded, 2 failed, 0 skipped).")
    assert re.search(r"\d+\.\d\d rps\. \[\d\d:\d\d:\d\d/\d\d:\d\d:\d\d\]$", progress[-1])

    faces = api.faces(gallery)
    assert sorted(f["meta"] for f in faces) == sorted(p.stem for p in photos)
    assert all("gender" in f and "age" in f for f in faces)
    listed = {Path(e["image"]).name: e for e in printed(job)}
    assert sorted(f["id"] for f in faces) == sorted(
        i for e in listed.values() for i in e.get("faces", [])
    )
    failed = {Path(e["image"]).name: e["error"]["code"] for e in printed(job, "--failed")}
    assert failed == {"broken.png": "BAD_PARAM", "coffee.png": "BAD_PARAM"}

    # A rerun skips everything: what succeeded and, without --failed, what failed.
    again = mass_enroll(*run_args(api, job, gallery))
    assert summary(again.stdout) == {"found": 8, "skipped": 8, "succeeded": 0, "failed": 0}
    assert again.returncode == 1  # the job still holds failed images
    assert len(api.faces(gallery)) == 6

    # --failed retries only the failed ones; after fixing the cause they succeed.
    shutil.copy(chips(7)[6], broken)
    retried = mass_enroll(*run_args(api, job, gallery, "--failed"))
    assert summary(retried.stdout) == {"found": 8, "skipped": 6, "succeeded": 1, "failed": 1}
    assert [e["image"] for e in printed(job, "--failed")] == [str(tmp_path / "in" / "coffee.png")]
    assert sorted(f["meta"] for f in api.faces(gallery)) == sorted(
        [*(p.stem for p in photos), "broken"]
    )


def test_run_stops_on_a_bad_token_or_gallery(tmp_path: Path, api: Api) -> None:
    job = tmp_path / "j.job"
    mass_enroll("--job", str(job), "prepare", str(chips(1)[0]), check=True)
    bad_token = mass_enroll("--job", str(job), "run", "--api", api.url, "--token", "nope")
    assert bad_token.returncode == 2
    assert "401" in bad_token.stderr
    no_gallery = mass_enroll(*run_args(api, job, "no-such-gallery"))
    assert no_gallery.returncode == 2
    assert "no gallery 'no-such-gallery'" in no_gallery.stderr
    with Job(job) as j:
        assert j.count(PENDING) == 1


# -- exactly once -----------------------------------------------------------------------------


def test_a_post_whose_answer_was_lost_is_found_not_sent_again(tmp_path: Path, api: Api) -> None:
    """The state a kill -9 leaves between a POST and the record of its answer, made on purpose:
    two images marked `sending`; one was really posted (and enrolled), the other never left."""
    gallery = api.new_gallery()
    posted, unsent, rest = copy_photos(tmp_path / "in", chips(3))
    job_path = tmp_path / "j.job"
    mass_enroll(
        "--job", str(job_path), "prepare", "--meta-const=Amy", f"{tmp_path}/in/*.png", check=True
    )
    with Job(job_path) as job, api.client() as c:
        watermark = max((f["id"] for f in api.faces(gallery)), default=0)
        run = job.start_run(api.url, gallery, "", watermark)
        ids = {Path(i.path): i.id for i in job.images()}
        job.mark_sending(
            [(ids[p], hashlib.md5(p.read_bytes()).hexdigest()) for p in (posted, unsent)], run
        )
        answer = c.post(
            "/v1/face",
            data={"meta": "Amy", "galleries": json.dumps([gallery])},
            files={"photo": (posted.name, posted.read_bytes())},
        )
        assert answer.status_code == 200, answer.text
        enrolled = answer.json()["results"][0]["id"]

    done = mass_enroll(*run_args(api, job_path, gallery, "--settle", "1"), check=True)
    assert summary(done.stdout) == {"found": 3, "skipped": 1, "succeeded": 2, "failed": 0}
    faces = api.faces(gallery)
    assert len(faces) == 3
    by_image = {Path(e["image"]): e for e in printed(job_path)}
    assert by_image[posted]["faces"] == [enrolled]
    assert by_image[posted]["attempts"] == 1  # found, not posted again
    assert by_image[unsent]["attempts"] == 2
    assert {i for e in by_image.values() for i in e["faces"]} == {f["id"] for f in faces}
    assert rest in by_image


def test_kill_9_at_random_points_then_resume_enrolls_each_image_once(
    tmp_path: Path, api: Api
) -> None:
    gallery = api.new_gallery()
    # Four copies of 30 chips (each copy its own meta), so that a run outlasts the random kill
    # times below however fast enrollment gets.
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    photos = []
    for copy in range(4):
        for chip in chips(30):
            photos.append(folder / f"{copy}-{chip.name}")
            shutil.copy(chip, photos[-1])
    # Two byte-identical copies with the same meta: never in flight together.
    twin = tmp_path / "in" / "twin.png"
    shutil.copy(photos[0], twin)
    with open(tmp_path / "meta.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([[p.stem, str(p)] for p in photos])
        writer.writerow([photos[0].stem, str(twin)])
    job = tmp_path / "j.job"
    mass_enroll(
        "--job", str(job), "prepare", f"--meta-csv={tmp_path}/meta.csv", f"{tmp_path}/in/*.png",
        check=True,
    )  # fmt: skip
    rng = random.Random(int(os.environ.get("MASS_ENROLL_SEED", "9")))
    kills = 0
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-m", "facegrid.bulk",
             *run_args(api, job, gallery, "--parallel", "6", "--settle", "10")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.8, 3.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(30)
    assert kills >= 2
    final = mass_enroll(*run_args(api, job, gallery, "--settle", "10"), check=True)
    assert summary(final.stdout)["failed"] == 0

    with Job(job) as j:
        assert j.count(DONE) == len(photos) + 1
        assert j.count(PENDING, FAILED) == 0
        images = list(j.images())
    faces = api.faces(gallery)
    claimed = [i for image in images for i in image.faces]
    assert sorted(claimed) == sorted(f["id"] for f in faces)  # every face claimed exactly once
    enrolled = collections.Counter((f["photo_hash"], f["meta"]) for f in faces)
    expected = collections.Counter(
        (hashlib.md5(Path(i.path).read_bytes()).hexdigest(), i.meta) for i in images
    )
    assert enrolled == expected  # each image once: the twin twice, everything else once


def test_unreachable_api_keeps_the_job(tmp_path: Path) -> None:
    job = tmp_path / "j.job"
    mass_enroll("--job", str(job), "prepare", str(chips(1)[0]), check=True)
    down = mass_enroll("--job", str(job), "run", "--api", "http://127.0.0.1:9", "--token", "t")
    assert down.returncode == 2
    with Job(job) as j:
        assert j.count(PENDING) == 1


def test_api_root_reads_the_version_from_the_url() -> None:
    from facegrid.bulk.client import api_root

    assert api_root("http://127.0.0.1:8000/") == ("http://127.0.0.1:8000", "v1")
    assert api_root("http://h/ff/v0/") == ("http://h/ff", "v0")
    assert httpx.URL(api_root("https://h:1/v1")[0]).port == 1

"""Extractor speed on this machine: our face vectors against dlib's, and whole photos.

1. Face vectors on the same chips, in one run: dlib-bin's `compute_face_descriptor` (one chip at
   a time and in a batch) against our ONNX model at batch 1, 8 and 32. Prints faces/s and the
   ratio to dlib.
2. Photos end to end: a 640x480 photo with one face through detect, landmarks, alignment, face
   vector, gender, age and emotions. Prints photos/s.

    FACEGRID_MODEL_CACHE=... python bench/extractor_speed.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import dlib
import numpy as np

from facegrid.extractor import sources
from facegrid.extractor.bundle import build
from facegrid.extractor.core.engine import Engine
from facegrid.extractor.core.extraction import Extraction, ExtractItem, Wanted

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def rate(work: Callable[[], int], seconds: float) -> float:
    """Items per second of work() (which returns how many items it did), after one warm-up."""
    work()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = all)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bundle = build(Path(tmp) / "models", progress=lambda _line: None).path
        engine = Engine(bundle, threads=args.threads)
        engine.warm_up()
        resnet = Path(tmp) / "resnet.dat"
        resnet.write_bytes(
            sources.read_member(
                sources.FACE_RECOGNITION_MODELS,
                "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            )
        )
        facerec = dlib.face_recognition_model_v1(str(resnet))

        photo = cv2.cvtColor(
            cv2.imread(str(FACES / "face_recognition/examples/obama.jpg")), cv2.COLOR_BGR2RGB
        )
        face = engine.detect(photo)[0]
        chip = engine.chip(photo, face)
        chips = {n: np.repeat(chip[None], n, axis=0) for n in (1, 8, 32)}

        print("face vectors on the same 150x150 chip (faces/s):")
        dlib_single = rate(lambda: (facerec.compute_face_descriptor(chip), 1)[1], args.seconds)
        dlib_batch = rate(lambda: len(facerec.compute_face_descriptor([chip] * 8)), args.seconds)
        print(f"  dlib-bin compute_face_descriptor, one chip:  {dlib_single:8.1f}")
        print(f"  dlib-bin compute_face_descriptor, 8 chips:   {dlib_batch:8.1f}")
        baseline = max(dlib_single, dlib_batch)
        for n, batch in chips.items():
            ours = rate(lambda b=batch: len(engine.facen(b)), args.seconds)
            print(
                f"  ours (onnxruntime CPU), batch {n:2d}:          {ours:8.1f}"
                f"   {ours / baseline:5.1f}x dlib"
            )

        scaled = cv2.resize(photo, (480, 600))
        canvas = np.zeros((480, 640, 3), np.uint8)
        canvas[:, 80:560] = cv2.resize(scaled, (480, 480))
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        assert ok
        extraction = Extraction(engine)
        item = [ExtractItem(encoded.tobytes())]
        wanted = Wanted(facen=True, gender=True, age=True, emotions=True)
        assert extraction.extract(item, wanted)[0].error is None
        photos = rate(lambda: len(extraction.extract(item, wanted)), args.seconds)
        print(
            "640x480 JPEG, one face, decode + detect + landmarks + align + facen + gender "
            f"+ age + emotions: {photos:.1f} photos/s"
        )


if __name__ == "__main__":
    main()

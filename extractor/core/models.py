"""What the extractor serves: the model bundle and the inference providers it runs on.

Detection, alignment and the models themselves come with the model bundle; without one the
extractor still starts, reports its providers, and answers every inference call with a clear
"no models" error rather than a made-up result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The bundle this build of FaceGrid makes and expects (`facegrid models build`).
BUNDLE_VERSION = "2026.11.1"

# An onnxruntime execution provider: its name, or its name and options.
Provider = str | tuple[str, dict[str, str]]


class ExtractorError(Exception):
    pass


class NoModels(ExtractorError):
    """No model bundle is installed, so nothing can be detected or extracted."""


class BadBundle(ExtractorError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    task: str
    sha256: str


@dataclass(frozen=True)
class Bundle:
    version: str
    facen_size: int
    models: tuple[ModelEntry, ...]

    @classmethod
    def load(cls, folder: Path) -> Bundle:
        manifest = folder / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
            return cls(
                version=str(data["version"]),
                facen_size=int(data["facen_size"]),
                models=tuple(
                    ModelEntry(m["name"], m["version"], m["task"], m["sha256"])
                    for m in data["models"]
                ),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadBundle(f"cannot read model bundle manifest {manifest}: {e}") from e


class Extractor:
    def __init__(self, bundle: Bundle | None, providers: list[str], unavailable: str = "") -> None:
        self.bundle = bundle
        self.providers = providers
        # Why the extractor cannot serve at all (e.g. CUDA asked for but absent); empty if it can.
        self.unavailable = unavailable

    def require_models(self) -> Bundle:
        if self.bundle is None:
            raise NoModels(
                "no model bundle is installed: set FACEGRID_EXTRACTOR_MODEL_DIR to a bundle"
            )
        return self.bundle

"""The extractor's domain: model bundle, image intake, detection, alignment and inference.

No gRPC and no generated code; onnxruntime, NumPy and OpenCV only.
"""

from facegrid.extractor.core.models import (
    BadBundle,
    Bundle,
    Extractor,
    ExtractorError,
    ModelEntry,
    NoModels,
)

__all__ = ["BadBundle", "Bundle", "Extractor", "ExtractorError", "ModelEntry", "NoModels"]

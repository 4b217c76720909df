"""FaceGrid: a FindFace-compatible, Kubernetes-native face recognition platform.

This package holds what every process shares (settings, observability, the gRPC server shell)
and the `facegrid` command; each service lives in its own subpackage and folder.
"""

from pathlib import Path

__version__ = "0.1.0"

# `operator/` has no __init__.py: a regular package there would shadow the standard library's
# `operator` module whenever Python runs with the repository root on sys.path (`python -m` from
# the root does that before anything else is imported). It is therefore a namespace package,
# which the editable install's finder cannot map; from a source checkout, let the standard
# finder look for it beside this folder. Installed wheels hold `facegrid/operator/` directly.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
if Path(__file__).resolve().parent.name == "common" and (_SOURCE_ROOT / "operator").is_dir():
    __path__.append(str(_SOURCE_ROOT))

"""FaceGrid: a FindFace-compatible, Kubernetes-native face recognition platform.

This package holds what every process shares (settings, observability, the gRPC server shell)
and the `facegrid` command; each service lives in its own subpackage and folder.
"""

import importlib.machinery
import sys
from pathlib import Path

__version__ = "0.1.0"

# `operator/` has no __init__.py: a regular package there would shadow the standard library's
# `operator` module whenever Python runs with the repository root on sys.path (`python -m` from
# the root does that before anything else is imported). As a namespace package it is invisible
# to the editable install's finder, so a source checkout (this file still in `common/`) gets a
# finder for exactly that one package. Installed wheels hold `facegrid/operator/` directly.
if Path(__file__).parent.name == "common":
    _OPERATOR_ROOT = str(Path(__file__).resolve().parent.parent)

    class _OperatorFinder:
        @staticmethod
        def find_spec(
            name: str, path: object = None, target: object = None
        ) -> importlib.machinery.ModuleSpec | None:
            if name != "facegrid.operator":
                return None
            return importlib.machinery.PathFinder.find_spec(name, [_OPERATOR_ROOT])

    sys.meta_path.append(_OperatorFinder)

"""`python -m facegrid.operator`: the Kubernetes operator (kopf).

Its settings are defined and validated here; the FaceGallery and Camera handlers are not part
of this build yet, so running it (rather than `--help` or `--check-config`) stops with a clear
message instead of pretending to reconcile anything.
"""

from __future__ import annotations

import sys

from facegrid.entrypoint import parse
from facegrid.operator.settings import OperatorSettings

NOT_BUILT = 3


def main(argv: list[str] | None = None) -> None:
    settings, check_only = parse(
        "facegrid-operator",
        "Reconcile FaceGallery and Camera resources and serve ControlPlane (Kubernetes).",
        OperatorSettings,
        argv,
    )
    if check_only:
        print(settings.describe())
        return
    print(
        "facegrid-operator: the Kubernetes handlers are not in this build; on one machine "
        "use `facegrid up`, whose local control plane serves the same contract",
        file=sys.stderr,
    )
    sys.exit(NOT_BUILT)

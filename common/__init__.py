"""FaceGrid: a FindFace-compatible, Kubernetes-native face recognition platform.

This package holds what every process shares (settings, observability, the gRPC server shell)
and the `facegrid` command; each service lives in its own subpackage and folder.
"""

__version__ = "0.1.0"

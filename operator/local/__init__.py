"""The local control plane: ControlPlane over gRPC, backed by MongoDB, for one machine."""

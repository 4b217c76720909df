"""The REST gateway: the FindFace v0 and v1 API over MongoDB, Redis and the gRPC services."""

"""Placement and lifecycle rules shared by both control planes (local and the operator).

Pure functions and dataclasses: no gRPC, no Kubernetes client, no database driver.
"""

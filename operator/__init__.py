"""Control planes: the kopf operator for Kubernetes and the local one for a single machine.

Imported only as `facegrid.operator`: the folder is never put on sys.path by itself, since the
standard library owns the top-level name `operator`.
"""

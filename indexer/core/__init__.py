"""The shard's domain: galleries of vectors, the write-ahead log, and the shard that ties them.

Pure Python and hnswlib: no gRPC and no generated code, so it can be tested and benchmarked in
process and served by any transport.
"""

from facegrid.indexer.core.errors import (
    DimensionMismatch,
    DuplicateId,
    GalleryNotFound,
    IndexerError,
    InvalidRequest,
)
from facegrid.indexer.core.shard import GalleryStats, Shard, ShardStats

__all__ = [
    "DimensionMismatch",
    "DuplicateId",
    "GalleryNotFound",
    "GalleryStats",
    "IndexerError",
    "InvalidRequest",
    "Shard",
    "ShardStats",
]

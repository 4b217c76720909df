"""What can go wrong in a shard; the servicer maps each class to one gRPC status once."""


class IndexerError(Exception):
    """Base of the shard's errors; none of them leaves a write half-applied."""


class InvalidRequest(IndexerError):
    """The request is malformed (empty gallery name, vector of a bad length, NaN, ...)."""


class GalleryNotFound(IndexerError):
    pass


class DimensionMismatch(InvalidRequest):
    """A vector's size differs from the gallery's: vectors of different models never mix."""


class DuplicateId(IndexerError):
    """An id being added exists already and the call did not ask for upsert."""


class SnapshotDamaged(IndexerError):
    """A snapshot or the log does not check out; the shard refuses to start rather than guess."""


class SnapshotNeeded(IndexerError):
    """Replication asked for records older than the log keeps: start from a snapshot."""


class ReplicationGap(IndexerError):
    """A replicated record does not follow the last one applied: the follower must resync."""


class NotPrimary(IndexerError):
    """A write reached a follower; writes go to the primary."""

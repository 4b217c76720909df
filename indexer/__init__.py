"""The indexer: shards of the face vector index, one HNSW graph per gallery, behind a WAL."""

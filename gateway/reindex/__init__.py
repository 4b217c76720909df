"""`facegrid reindex`: rebuild the index shards from MongoDB, and check that they agree.

The seed's mongo2searchapi, grown up. MongoDB holds every face's vector (the gateway writes the
record first and the shards second), so the shards can always be rebuilt from it:

- `rebuild` streams each gallery's active faces in id order, routes them by the gallery's
  placement and upserts them on their shards in batches, checkpointing the last id done so that
  an interrupted run resumes where it stopped;
- `check` compares, gallery by gallery and shard by shard, the ids MongoDB routes to a shard
  with the ids the shard holds (and, sampled or in full, their vectors), and repairs what
  differs;
- both finish or remove what a crashed enrollment left behind: records still pending after a
  grace period are removed, as the gateway itself undoes a failed enrollment.

The layers: `store` (MongoDB: faces, pending records, checkpoints), `topology` (the control
plane's placements, vectorised slot routing, shard calls), `rebuild` and `check` (the two jobs),
`progress` (the live line) and `cli` (the subcommand). Nothing here is imported by the serving
gateway.
"""

-- exception_syncs: where each partition's engine took a new set of exceptions (docs/ARCHITECTURE.md).
-- One row per change applied to a partition, written in the same batch as the rows it caused, so the
-- latest row of a partition is the set its written output reflects. After a crash or a rebalance the
-- partition's next owner applies that set at once (its replayed output is already written), and the
-- current set only once it is past the partition's output watermarks: exceptions are never lost or
-- applied twice. exceptions is the JSON array of the set (posture_core::exception::Exception).
CREATE TABLE IF NOT EXISTS exception_syncs
(
    source_partition Int32,
    source_offset    Int64,
    exceptions       String,
    written_at       DateTime
)
ENGINE = MergeTree()
ORDER BY (source_partition, source_offset)

-- engine_snapshots: the state of one partition's evaluation engine (posture_core::Engine::snapshot)
-- at an input offset: everything before next_offset has been applied and its rows written. After a
-- crash or a rebalance, the partition's new owner restores the latest complete snapshot and replays
-- the input from next_offset (docs/ARCHITECTURE.md). A snapshot is split into chunks (one row each,
-- written in one INSERT); it is complete when all `chunks` chunks are present. Older snapshots are
-- deleted once a newer one is complete (ALTER TABLE ... DELETE).
CREATE TABLE IF NOT EXISTS engine_snapshots
(
    topic        String,
    partition    Int32,
    next_offset  Int64,
    chunk        UInt32,
    chunks       UInt32,
    total_bytes  UInt64,
    created      DateTime,
    data         String
)
ENGINE = MergeTree()
ORDER BY (topic, partition, next_offset, chunk)

-- score_deltas: one row per ScopeDelta of the core (posture_core::engine::ScopeDelta).
--
-- The score of a scope (tenant, or tenant x group; optionally one category) at instant t comes from
-- its rows with event_time_ms <= t (SPEC section 3): per control, the summed PASS/FAIL count deltas
-- give f_c and the score p_c * f_c (control_points = p_c). Count deltas are additive across Kafka
-- partitions (one engine each); the points_* deltas are exact sums for one partition only, and are
-- kept for lineage and debugging. `group` = '' is the scope of the whole tenant. Points are integer
-- micro-points (1 point = 1,000,000).
-- (source_partition, source_offset, seq) identifies a row: seq numbers the rows that one source
-- offset produced, for deduplication.
CREATE TABLE IF NOT EXISTS score_deltas
(
    tenant           String,
    group            String,
    category         String,
    control          String,
    control_points   Int64,
    event_time       DateTime,
    event_time_ms    Int64,
    points_with      Int64,
    max_with         Int64,
    points_without   Int64,
    max_without      Int64,
    pass_with        Int32,
    fail_with        Int32,
    hidden_with      Int32,
    pass_without     Int32,
    fail_without     Int32,
    source_partition Int32,
    source_offset    Int64,
    seq              UInt32
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, group, event_time, category, control)

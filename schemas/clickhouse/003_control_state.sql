-- control_state: the current state of every (tenant, device, control), one row per transition;
-- ReplacingMergeTree keeps the row with the highest `version` per key when parts merge. Merges
-- happen at an unknown time, so readers must use FINAL (as the documented query does) or
-- argMax(..., version) ... GROUP BY tenant, device, control.
-- Not partitioned by time: ReplacingMergeTree only replaces rows within one partition.
-- `version` is assigned by the sink and increases in the order transitions are written.
CREATE TABLE IF NOT EXISTS control_state
(
    tenant           String,
    device           String,
    control          String,
    category         String,
    state            Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4, 'EXCEPTED' = 5),
    raw_state        Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4),
    exception        Enum8('NONE' = 0, 'CREDIT' = 1, 'NO_CREDIT' = 2),
    counted          UInt8,
    reason           Enum8('EVENT' = 1, 'RETIRED' = 2, 'INACTIVE' = 3, 'EXCEPTION_STARTED' = 4, 'EXCEPTION_ENDED' = 5),
    event_time       DateTime,
    event_time_ms    Int64,
    source_partition Int32,
    source_offset    Int64,
    seq              UInt32,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, device, control)

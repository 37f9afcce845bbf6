-- transitions, partitioned by day instead of by month. The raw log is ordered by device (a
-- device's history, and the devices of a fleet-wide list, are read by key), so the part of the
-- last hour that a score at a mid-hour instant reads (tail_counts) is found by partition: with
-- monthly partitions that read scanned the tenant's whole month of transitions (1.7 s with 50 M
-- rows in the 5 days before the instant, posture-history-bench --month-rows), with daily ones
-- its day. ClickHouse cannot change a table's partition key, so the table is made again: the old
-- one is renamed transitions_monthly and its rows copied, once (while the new table is empty).
-- transitions_monthly is kept (drop it once the upgrade is checked).
--
-- RENAME cannot say IF EXISTS on 18.16: `posture migrate` takes "already exists" (a run that got
-- past it before) as done for a RENAME TABLE.
RENAME TABLE transitions TO transitions_monthly;

CREATE TABLE IF NOT EXISTS transitions
(
    tenant               String,
    device               String,
    control              String,
    category             String,
    old_state            Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4, 'EXCEPTED' = 5),
    new_state            Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4, 'EXCEPTED' = 5),
    old_raw              Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4),
    new_raw              Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4),
    old_exception        Enum8('NONE' = 0, 'CREDIT' = 1, 'NO_CREDIT' = 2),
    new_exception        Enum8('NONE' = 0, 'CREDIT' = 1, 'NO_CREDIT' = 2),
    old_counted          UInt8,
    new_counted          UInt8,
    reason               Enum8('EVENT' = 1, 'RETIRED' = 2, 'INACTIVE' = 3, 'EXCEPTION_STARTED' = 4, 'EXCEPTION_ENDED' = 5),
    event_time           DateTime,
    event_time_ms        Int64,
    device_points_with    Int64,
    device_max_with       Int64,
    device_points_without Int64,
    device_max_without    Int64,
    source_partition     Int32,
    source_offset        Int64,
    seq                  UInt32,
    control_points       Int64,
    scope_groups         Array(String),
    scope_pass_with      Array(Int8),
    scope_fail_with      Array(Int8),
    scope_hidden_with    Array(Int8),
    scope_pass_without   Array(Int8),
    scope_fail_without   Array(Int8),
    scope_points_with    Array(Int64),
    scope_points_without Array(Int64)
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (tenant, device, event_time, control);

INSERT INTO transitions
SELECT *
FROM transitions_monthly
WHERE (SELECT count() FROM transitions) = 0

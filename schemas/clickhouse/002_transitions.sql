-- transitions: one row per control-state transition of a device (posture_core::Transition).
--
-- A device's score at instant t is the sum of its device_* deltas with event_time_ms <= t.
-- States: *_state is s(d,c) of SPEC section 3 (exceptions applied), *_raw the evaluation result
-- before exceptions, *_exception the exception status; *_counted says whether the device counted
-- in scores (not retired, not inactive) before and after.
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
    seq                  UInt32
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant, device, event_time, control)

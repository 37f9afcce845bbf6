-- device_evidence: the evidence behind control states (`posture devices --device`, GET
-- .../devices/{device}), one row per applied event that carries a setting some baseline check
-- reads (keys no check reads are not kept), or that is a SNAPSHOT. It replaces device_settings
-- (one row per setting per event): the sink no longer writes device_settings, which keeps the
-- rows written before this migration, and readers read both.
--
-- keys, values, absent are parallel arrays: the event's settings (value as JSON text, '' when
-- removed; absent = 1 when a REMOVE event, or a null value, made the key absent). A SNAPSHOT
-- replaces the whole configuration: its arrays start with the marker key '' (keys whose latest
-- value is older than the device's latest marker are absent).
--
-- ReplacingMergeTree on the event's identity (tenant, device, sequence): a replayed or retried
-- event's row folds into the first one when parts merge; readers take the latest value per key
-- by sequence (argMax), which duplicates do not change.
CREATE TABLE IF NOT EXISTS device_evidence
(
    tenant           String,
    device           String,
    sequence         Int64,
    keys             Array(String),
    values           Array(String),
    absent           Array(UInt8),
    event_time_ms    Int64,
    source_partition Int32,
    source_offset    Int64
)
ENGINE = ReplacingMergeTree()
ORDER BY (tenant, device, sequence)

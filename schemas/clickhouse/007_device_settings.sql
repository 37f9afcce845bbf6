-- device_settings: the latest value of every setting a baseline check reads, per device: the
-- evidence behind each control's state (`posture devices --device`, GET .../devices/{device}).
-- One row per setting per applied event (keys no check reads are not kept); ReplacingMergeTree
-- keeps the row with the highest `sequence` (the device's event sequence) per key when parts
-- merge, so the table holds about one row per device and key; readers use argMax by sequence.
-- value is the setting as JSON text; removed = 1 when a REMOVE event made the key absent. A
-- SNAPSHOT replaces the whole configuration: it also writes a marker row with key '', and
-- keys whose latest row is older than the device's latest marker are absent.
-- Replays write identical rows again, which the replacing merge folds (no watermark needed).
CREATE TABLE IF NOT EXISTS device_settings
(
    tenant           String,
    device           String,
    key              String,
    value            String,
    removed          UInt8,
    sequence         Int64,
    event_time_ms    Int64,
    source_partition Int32,
    source_offset    Int64
)
ENGINE = ReplacingMergeTree(sequence)
ORDER BY (tenant, device, key)

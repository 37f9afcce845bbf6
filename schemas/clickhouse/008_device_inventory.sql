-- device_inventory: each device's inventory (OS, hostname, groups, tags) as its latest event with
-- one gave it, for the group and OS filters of device lists and the one-device view. One row per
-- applied event that carries an inventory; ReplacingMergeTree keeps the highest `sequence` per
-- device when parts merge, and readers take argMax by sequence. Replays write identical rows.
CREATE TABLE IF NOT EXISTS device_inventory
(
    tenant           String,
    device           String,
    os_family        String,
    os_version       String,
    hostname         String,
    groups           Array(String),
    tags             Array(String),
    sequence         Int64,
    event_time_ms    Int64,
    source_partition Int32,
    source_offset    Int64
)
ENGINE = ReplacingMergeTree(sequence)
ORDER BY (tenant, device)

-- device_state: the current state of every control of a device, one row per device per flush in
-- which it changed (instead of control_state's row per transition). It replaces control_state,
-- which the sink no longer writes; the state of the devices control_state holds is copied here
-- once, below.
--
-- A row written by the sink holds the device's cells in the order of the baseline catalog it was
-- evaluated with: states (s(d,c), exceptions applied), raw_states (before exceptions) and
-- exceptions are parallel to the catalog's controls, which baseline_catalogs holds once per
-- catalog (`catalog`, a hash of its control ids and categories): three bytes per control, no
-- control names per row. Rows copied from control_state (catalog = 0) name their controls inline
-- (controls, categories). counted = 0: the device is retired or inactive (outside every score).
-- event_time_ms and the source position are those of the device's latest transition written.
--
-- ReplacingMergeTree keeps the row with the highest `version` per device when parts merge:
-- readers use FINAL (exact; cheap when filtered on the key prefix `tenant`). `version` is the
-- sink's hybrid clock (wall-clock microseconds, increasing in write order); a replay after a crash
-- does not write the rows of records at or below the partition's highest source_offset here.
-- The reason and time of each control's last change come from `transitions` (query
-- control_changes): a device's own history, read for the devices shown.
CREATE TABLE IF NOT EXISTS device_state
(
    tenant           String,
    device           String,
    counted          UInt8,
    catalog          UInt64,
    controls         Array(String),
    categories       Array(String),
    states           Array(Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4, 'EXCEPTED' = 5)),
    raw_states       Array(Enum8('PASS' = 1, 'FAIL' = 2, 'UNKNOWN' = 3, 'NOT_APPLICABLE' = 4)),
    exceptions       Array(Enum8('NONE' = 0, 'CREDIT' = 1, 'NO_CREDIT' = 2)),
    event_time_ms    Int64,
    source_partition Int32,
    source_offset    Int64,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, device);

-- baseline_catalogs: the controls (ids and categories, in catalog order) of each baseline catalog
-- a pipeline has evaluated with; device_state rows name theirs by `catalog`. Written by the sink
-- before the first device_state row of a catalog; the same catalog twice folds into one row.
CREATE TABLE IF NOT EXISTS baseline_catalogs
(
    catalog    UInt64,
    controls   Array(String),
    categories Array(String),
    written_at DateTime
)
ENGINE = ReplacingMergeTree()
ORDER BY catalog;

-- The upgrade: every device of control_state, its controls' latest states inline (catalog = 0),
-- only while device_state is empty (so once).
INSERT INTO device_state (tenant, device, counted, catalog, controls, categories, states, raw_states, exceptions, event_time_ms, source_partition, source_offset, version)
SELECT
    tenant,
    device,
    argMax(counted, version),
    toUInt64(0),
    groupArray(control),
    groupArray(category),
    groupArray(state),
    groupArray(raw_state),
    groupArray(exception),
    max(event_time_ms),
    argMax(source_partition, version),
    max(source_offset),
    toUInt64(0)
FROM control_state FINAL
WHERE (SELECT count() FROM device_state) = 0
GROUP BY tenant, device

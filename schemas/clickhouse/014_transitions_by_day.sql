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

-- The same columns as the renamed table (002 and the scope columns of 011), another partition key.
CREATE TABLE IF NOT EXISTS transitions AS transitions_monthly
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (tenant, device, event_time, control);

INSERT INTO transitions
SELECT *
FROM transitions_monthly
WHERE (SELECT count() FROM transitions) = 0

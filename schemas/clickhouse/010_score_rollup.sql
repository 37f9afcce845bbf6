-- score_rollup: the pre-aggregated trend store and the commit point of every flush
-- (docs/ARCHITECTURE.md "Trend storage and consistent reads").
--
-- Data rows (level 1-4): per scope (tenant, group; '' = the whole tenant), control and time bucket,
-- the summed PASS/FAIL count deltas of every transition whose event time falls in the bucket.
-- Buckets are aligned to multiples of their size since the epoch (UTC), and nest:
--   level 1 = hour (3,600,000 ms), 2 = day (86,400,000 ms), 3 = 30 days (2,592,000,000 ms),
--   level 4 = 360 days (31,104,000,000 ms).
-- Every delta is written once at each level, so the counts at any instant are the sum of at most
-- one row per control for each era, 30-day block, day and hour before it (plus the part of the last
-- hour read from score_deltas): the cost of a query depends on controls x buckets, not on history.
--
-- Cut rows (level 0, tenant = '' and group = '', bucket_ms = the source partition): the flush
-- markers. next_offset sums to the partition's next offset (every record before it is in every
-- table) and clock_ms to its event-time clock at that offset; each flush adds the difference.
-- topic_partitions is the input topic's partition count when the row was written (not summed:
-- every cut row of a topic carries the same number), so readers know which partitions have not
-- committed anything yet.
--
-- The sink writes each flush's rows as ONE INSERT (one block, and the table has one partition, so
-- one part), after the flush's rows of every other table: a reader sees a flush completely or not
-- at all, and the cut rows it sees say exactly which prefix of each partition its answer is of.
-- SummingMergeTree adds up rows with the same key when parts merge (readers always sum).
CREATE TABLE IF NOT EXISTS score_rollup
(
    tenant         String,
    group          String,
    level          UInt8,
    bucket_ms      Int64,
    category       String,
    control        String,
    control_points Int64,
    pass_with      Int64,
    fail_with      Int64,
    hidden_with    Int64,
    pass_without   Int64,
    fail_without   Int64,
    next_offset    Int64,
    clock_ms       Int64,
    topic_partitions UInt32
)
ENGINE = SummingMergeTree((pass_with, fail_with, hidden_with, pass_without, fail_without, next_offset, clock_ms))
ORDER BY (tenant, group, level, bucket_ms, category, control, control_points);

-- Upgrade: the rollup of everything score_deltas already holds (a database written before this
-- migration), one INSERT per level, and the cut of each partition: its highest source offset
-- in score_deltas (the rollup holds exactly what score_deltas holds, so a replay adds what comes
-- after it) and its latest event time there. Run with the pipeline stopped (SIGTERM: the tables
-- are then complete up to each partition's snapshot). On a new database these select nothing;
-- each runs only while its level of score_rollup is empty, so running the file again (a
-- migration interrupted half-way) adds nothing twice.
INSERT INTO score_rollup
SELECT tenant, group, toUInt8(1), intDiv(event_time_ms, 3600000) * 3600000 AS b, category, control, control_points,
    sum(pass_with), sum(fail_with), sum(hidden_with), sum(pass_without), sum(fail_without), toInt64(0), toInt64(0), toUInt32(0)
FROM score_deltas
WHERE (SELECT count() FROM score_rollup WHERE level = 1) = 0
GROUP BY tenant, group, b, category, control, control_points;

INSERT INTO score_rollup
SELECT tenant, group, toUInt8(2), intDiv(event_time_ms, 86400000) * 86400000 AS b, category, control, control_points,
    sum(pass_with), sum(fail_with), sum(hidden_with), sum(pass_without), sum(fail_without), toInt64(0), toInt64(0), toUInt32(0)
FROM score_deltas
WHERE (SELECT count() FROM score_rollup WHERE level = 2) = 0
GROUP BY tenant, group, b, category, control, control_points;

INSERT INTO score_rollup
SELECT tenant, group, toUInt8(3), intDiv(event_time_ms, 2592000000) * 2592000000 AS b, category, control, control_points,
    sum(pass_with), sum(fail_with), sum(hidden_with), sum(pass_without), sum(fail_without), toInt64(0), toInt64(0), toUInt32(0)
FROM score_deltas
WHERE (SELECT count() FROM score_rollup WHERE level = 3) = 0
GROUP BY tenant, group, b, category, control, control_points;

INSERT INTO score_rollup
SELECT tenant, group, toUInt8(4), intDiv(event_time_ms, 31104000000) * 31104000000 AS b, category, control, control_points,
    sum(pass_with), sum(fail_with), sum(hidden_with), sum(pass_without), sum(fail_without), toInt64(0), toInt64(0), toUInt32(0)
FROM score_deltas
WHERE (SELECT count() FROM score_rollup WHERE level = 4) = 0
GROUP BY tenant, group, b, category, control, control_points;

INSERT INTO score_rollup
SELECT '', '', toUInt8(0), toInt64(source_partition), '', '', toInt64(0),
    toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), max(source_offset) + 1, max(event_time_ms),
    toUInt32((SELECT max(source_partition) + 1 FROM score_deltas))
FROM score_deltas
WHERE (SELECT count() FROM score_rollup WHERE level = 0) = 0
GROUP BY source_partition

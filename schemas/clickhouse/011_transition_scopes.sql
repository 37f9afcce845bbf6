-- One raw-log row per transition: each `transitions` row carries the scope deltas it caused, as
-- parallel arrays (one element per scope: the tenant, group '', and each device group the device
-- belonged to before or after), so the sink no longer writes `score_deltas` (one row per scope
-- per transition). `score_deltas` stays, read-only: it holds the scope deltas of the rows written
-- before this migration (whose scope arrays are empty), and every reader of scope deltas reads
-- both, so each scope delta is read exactly once, old or new.
--
-- scope_* elements: the scope's count deltas (with exceptions: pass, fail, hidden = the part of
-- fail hidden from recommendations by an exception; without: pass, fail), and its score deltas
-- (micro-points; exact sums within one input partition only: lineage, and the drop causes of the
-- alerts). control_points is the control's points p_c when the row was written (0 on old rows).
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: `posture migrate` takes "column already
-- exists" as done for an ALTER TABLE ... ADD COLUMN of one column (so a run interrupted between
-- two statements is repeated safely).
ALTER TABLE transitions ADD COLUMN control_points Int64;
ALTER TABLE transitions ADD COLUMN scope_groups Array(String);
ALTER TABLE transitions ADD COLUMN scope_pass_with Array(Int8);
ALTER TABLE transitions ADD COLUMN scope_fail_with Array(Int8);
ALTER TABLE transitions ADD COLUMN scope_hidden_with Array(Int8);
ALTER TABLE transitions ADD COLUMN scope_pass_without Array(Int8);
ALTER TABLE transitions ADD COLUMN scope_fail_without Array(Int8);
ALTER TABLE transitions ADD COLUMN scope_points_with Array(Int64);
ALTER TABLE transitions ADD COLUMN scope_points_without Array(Int64);

-- scope_deltas: every scope delta, one row each, as score_deltas had them (the new rows unfolded
-- with ARRAY JOIN, then the old ones). For the documented reference queries and people; the hot
-- paths (tail_counts, drop_causes) read the two tables themselves, so that their filters use the
-- tables' keys on every server version.
CREATE VIEW IF NOT EXISTS scope_deltas AS
SELECT
    tenant,
    g AS group,
    category,
    control,
    control_points,
    event_time,
    event_time_ms,
    pw AS points_with,
    pwo AS points_without,
    toInt32(p_w) AS pass_with,
    toInt32(f_w) AS fail_with,
    toInt32(h_w) AS hidden_with,
    toInt32(p_wo) AS pass_without,
    toInt32(f_wo) AS fail_without,
    device,
    source_partition,
    source_offset
FROM transitions
ARRAY JOIN
    scope_groups AS g,
    scope_pass_with AS p_w,
    scope_fail_with AS f_w,
    scope_hidden_with AS h_w,
    scope_pass_without AS p_wo,
    scope_fail_without AS f_wo,
    scope_points_with AS pw,
    scope_points_without AS pwo
UNION ALL
SELECT
    tenant,
    group,
    category,
    control,
    control_points,
    event_time,
    event_time_ms,
    points_with,
    points_without,
    pass_with,
    fail_with,
    hidden_with,
    pass_without,
    fail_without,
    '' AS device,
    source_partition,
    source_offset
FROM score_deltas

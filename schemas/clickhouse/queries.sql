-- posture trend queries (ClickHouse). Each block is one query, introduced by `-- name: NAME`.
-- Parameters use ClickHouse's query-parameter syntax {name:Type}: ClickHouse 19.x and later bind
-- them server-side (HTTP param_name=..., clickhouse-client --param_name=...); for servers without
-- query parameters (the test stack's 18.16) posture_sink::queries renders them as typed literals.
-- Times are epoch milliseconds (UTC). Points are micro-points (1 point = 1,000,000).
-- Scope scores come from summed PASS/FAIL count deltas per control, which are additive across
-- partitions (one engine each): f_c = pass / (pass + fail), a control contributes
-- round(p_c * f_c) = intDiv(p, n) * pass + intDiv(2 * (p % n) * pass + n, 2 * n) micro-points
-- (n = pass + fail; exact in Int64, the core's `contribution`) and p_c to the maximum when n > 0.
-- Percent = 100 * score / max rounded half up to two decimals, 0 when max = 0 (the core's rule).

-- name: score_at
-- The score of one scope at instant at_ms, from every delta with event_time_ms <= at_ms, with
-- and without exceptions. group = '' is the whole tenant; category = '' is every category.
SELECT
    sum(if(pass_w + fail_w > 0, intDiv(p, greatest(pass_w + fail_w, 1)) * pass_w + intDiv(2 * (p % greatest(pass_w + fail_w, 1)) * pass_w + pass_w + fail_w, 2 * greatest(pass_w + fail_w, 1)), 0)) AS score_with,
    sum(if(pass_w + fail_w > 0, p, 0)) AS max_score_with,
    if(max_score_with = 0, 0, intDiv(20000 * score_with + max_score_with, 2 * greatest(max_score_with, 1)) / 100) AS percent_with,
    sum(if(pass_wo + fail_wo > 0, intDiv(p, greatest(pass_wo + fail_wo, 1)) * pass_wo + intDiv(2 * (p % greatest(pass_wo + fail_wo, 1)) * pass_wo + pass_wo + fail_wo, 2 * greatest(pass_wo + fail_wo, 1)), 0)) AS score_without,
    sum(if(pass_wo + fail_wo > 0, p, 0)) AS max_score_without,
    if(max_score_without = 0, 0, intDiv(20000 * score_without + max_score_without, 2 * greatest(max_score_without, 1)) / 100) AS percent_without
FROM
(
    SELECT
        control,
        argMax(control_points, event_time_ms) AS p,
        sum(pass_with) AS pass_w,
        sum(fail_with) AS fail_w,
        sum(pass_without) AS pass_wo,
        sum(fail_without) AS fail_wo
    FROM scope_deltas
    WHERE tenant = {tenant:String}
        AND group = {group:String}
        AND ({category:String} = '' OR category = {category:String})
        AND event_time <= toDateTime(intDiv({at_ms:Int64}, 1000))
        AND event_time_ms <= {at_ms:Int64}
    GROUP BY control
);

-- name: category_scores_at
-- The per-category breakdown of score_at: one row per category with any delta up to at_ms
-- (a category with no row has score 0 and maximum 0).
SELECT
    category,
    sum(if(pass_w + fail_w > 0, intDiv(p, greatest(pass_w + fail_w, 1)) * pass_w + intDiv(2 * (p % greatest(pass_w + fail_w, 1)) * pass_w + pass_w + fail_w, 2 * greatest(pass_w + fail_w, 1)), 0)) AS score_with,
    sum(if(pass_w + fail_w > 0, p, 0)) AS max_score_with,
    if(max_score_with = 0, 0, intDiv(20000 * score_with + max_score_with, 2 * greatest(max_score_with, 1)) / 100) AS percent_with,
    sum(if(pass_wo + fail_wo > 0, intDiv(p, greatest(pass_wo + fail_wo, 1)) * pass_wo + intDiv(2 * (p % greatest(pass_wo + fail_wo, 1)) * pass_wo + pass_wo + fail_wo, 2 * greatest(pass_wo + fail_wo, 1)), 0)) AS score_without,
    sum(if(pass_wo + fail_wo > 0, p, 0)) AS max_score_without,
    if(max_score_without = 0, 0, intDiv(20000 * score_without + max_score_without, 2 * greatest(max_score_without, 1)) / 100) AS percent_without
FROM
(
    SELECT
        category,
        control,
        argMax(control_points, event_time_ms) AS p,
        sum(pass_with) AS pass_w,
        sum(fail_with) AS fail_w,
        sum(pass_without) AS pass_wo,
        sum(fail_without) AS fail_wo
    FROM scope_deltas
    WHERE tenant = {tenant:String}
        AND group = {group:String}
        AND event_time <= toDateTime(intDiv({at_ms:Int64}, 1000))
        AND event_time_ms <= {at_ms:Int64}
    GROUP BY category, control
)
GROUP BY category
ORDER BY category;

-- name: score_series
-- The score of one scope over [from_ms, to_ms] in buckets of step_ms (3600000 = hour, 86400000 =
-- day; buckets are aligned to multiples of step_ms since the epoch, i.e. UTC hours and days).
-- One row per bucket, empty buckets included: the score at the bucket's end, at_ms = the bucket's
-- last millisecond (the last bucket ends at to_ms), from every delta with event_time_ms <= at_ms.
-- Per control, the count deltas are summed per bucket (deltas before from_ms go to the first),
-- laid out densely (groupArrayInsertAt, padded to the number of buckets) and accumulated with
-- arrayCumSum: no window functions, which ClickHouse 18.16 lacks.
SELECT
    intDiv({from_ms:Int64}, {step_ms:Int64}) + toInt64(i) AS bucket,
    toDateTime(intDiv(bucket * {step_ms:Int64}, 1000)) AS bucket_start,
    least((bucket + 1) * {step_ms:Int64} - 1, {to_ms:Int64}) AS at_ms,
    sum(if(pass_w + fail_w > 0, intDiv(p, greatest(pass_w + fail_w, 1)) * pass_w + intDiv(2 * (p % greatest(pass_w + fail_w, 1)) * pass_w + pass_w + fail_w, 2 * greatest(pass_w + fail_w, 1)), 0)) AS score_with,
    sum(if(pass_w + fail_w > 0, p, 0)) AS max_score_with,
    if(max_score_with = 0, 0, intDiv(20000 * score_with + max_score_with, 2 * greatest(max_score_with, 1)) / 100) AS percent_with,
    sum(if(pass_wo + fail_wo > 0, intDiv(p, greatest(pass_wo + fail_wo, 1)) * pass_wo + intDiv(2 * (p % greatest(pass_wo + fail_wo, 1)) * pass_wo + pass_wo + fail_wo, 2 * greatest(pass_wo + fail_wo, 1)), 0)) AS score_without,
    sum(if(pass_wo + fail_wo > 0, p, 0)) AS max_score_without,
    if(max_score_without = 0, 0, intDiv(20000 * score_without + max_score_without, 2 * greatest(max_score_without, 1)) / 100) AS percent_without
FROM
(
    SELECT
        control,
        argMax(points, pos) AS p,
        arrayCumSum(arrayConcat(groupArrayInsertAt(pw, pos), arrayMap(x -> toInt64(0), range(toUInt64(nb - max(pos) - 1))))) AS cum_pass_w,
        arrayCumSum(arrayConcat(groupArrayInsertAt(fw, pos), arrayMap(x -> toInt64(0), range(toUInt64(nb - max(pos) - 1))))) AS cum_fail_w,
        arrayCumSum(arrayConcat(groupArrayInsertAt(pwo, pos), arrayMap(x -> toInt64(0), range(toUInt64(nb - max(pos) - 1))))) AS cum_pass_wo,
        arrayCumSum(arrayConcat(groupArrayInsertAt(fwo, pos), arrayMap(x -> toInt64(0), range(toUInt64(nb - max(pos) - 1))))) AS cum_fail_wo,
        any(n_buckets) AS nb
    FROM
    (
        SELECT
            control,
            toUInt32(greatest(intDiv(event_time_ms, {step_ms:Int64}) - intDiv({from_ms:Int64}, {step_ms:Int64}), 0)) AS pos,
            intDiv({to_ms:Int64}, {step_ms:Int64}) - intDiv({from_ms:Int64}, {step_ms:Int64}) + 1 AS n_buckets,
            argMax(control_points, event_time_ms) AS points,
            sum(pass_with) AS pw,
            sum(fail_with) AS fw,
            sum(pass_without) AS pwo,
            sum(fail_without) AS fwo
        FROM scope_deltas
        WHERE tenant = {tenant:String}
            AND group = {group:String}
            AND ({category:String} = '' OR category = {category:String})
            AND event_time <= toDateTime(intDiv({to_ms:Int64}, 1000))
            AND event_time_ms <= {to_ms:Int64}
        GROUP BY control, pos
        UNION ALL
        -- a zero row, so that every bucket has a row even when the scope has no delta at all
        SELECT
            '' AS control,
            toUInt32(0) AS pos,
            intDiv({to_ms:Int64}, {step_ms:Int64}) - intDiv({from_ms:Int64}, {step_ms:Int64}) + 1 AS n_buckets,
            toInt64(0) AS points,
            toInt64(0) AS pw,
            toInt64(0) AS fw,
            toInt64(0) AS pwo,
            toInt64(0) AS fwo
    )
    GROUP BY control
)
ARRAY JOIN
    range(toUInt64(nb)) AS i,
    cum_pass_w AS pass_w,
    cum_fail_w AS fail_w,
    cum_pass_wo AS pass_wo,
    cum_fail_wo AS fail_wo
GROUP BY bucket
ORDER BY bucket;

-- name: rollup_counts
-- The trend store's answer for one scope (group = '' is the whole tenant), in one scan of
-- score_rollup: one snapshot of the table, so every flush in it is complete and its cut rows say
-- which prefix of each source partition it holds. Rows:
--   pos = -2: a cut row per partition (cut_partition; next_offset = the first offset not
--             included, clock_ms = the partition's event-time watermark there, topic_partitions =
--             the input topic's partition count);
--   per control, the summed count deltas of the buckets asked for, by where they belong:
--   pos = 0 the base (whole buckets before series_from), pos = k >= 1 the k-th bucket of a
--   series of step_level buckets (step_ms wide, from series_from), pos = -1 finer buckets of the
--   last point, pos = -3 the hour bucket open_ms that holds the last instant.
-- For the counts at one instant t (step_level = 5, series_from = the maximum Int64, step_ms = 1),
-- with end = t + 1 and X(end) the start of the bucket holding end: level 4 in [0, era(end)),
-- level 3 in [era(end), block(end)), level 2 in [block(end), day(end)), level 1 in
-- [day(end), hour(end) + 1 hour) with open_ms = hour(end). The open hour counts when t is at or
-- after every partition's watermark (no included event is later); otherwise the deltas in
-- [hour(end), end) come from tail_counts, cut at the same partition offsets.
-- posture_sink::rollup::Decomposition computes the ranges (also for series).
SELECT
    multiIf(
        level = 0, toInt64(-2),
        level = 1 AND bucket_ms = {open_ms:Int64}, toInt64(-3),
        level < {step_level:UInt8}, toInt64(-1),
        bucket_ms >= {series_from:Int64}, intDiv(bucket_ms - {series_from:Int64}, {step_ms:Int64}) + 1,
        toInt64(0)) AS pos,
    if(level = 0, bucket_ms, toInt64(-1)) AS cut_partition,
    control,
    any(category) AS category,
    sum(pass_with) AS pass_w,
    sum(fail_with) AS fail_w,
    sum(hidden_with) AS hidden_w,
    sum(pass_without) AS pass_wo,
    sum(fail_without) AS fail_wo,
    sum(next_offset) AS next_offset,
    sum(clock_ms) AS clock_ms,
    max(topic_partitions) AS topic_partitions
FROM score_rollup
WHERE (tenant = '' AND group = '' AND level = 0)
    OR (tenant = {tenant:String} AND group = {group:String} AND (
           (level = 1 AND bucket_ms >= {lo1:Int64} AND bucket_ms < {hi1:Int64})
        OR (level = 2 AND bucket_ms >= {lo2:Int64} AND bucket_ms < {hi2:Int64})
        OR (level = 3 AND bucket_ms >= {lo3:Int64} AND bucket_ms < {hi3:Int64})
        OR (level = 4 AND bucket_ms >= {lo4:Int64} AND bucket_ms < {hi4:Int64})))
GROUP BY pos, cut_partition, control
HAVING pos = -2 OR pass_w != 0 OR fail_w != 0 OR hidden_w != 0 OR pass_wo != 0 OR fail_wo != 0
ORDER BY pos, cut_partition, control;

-- name: tail_counts
-- The part of the last hour that rollup_counts leaves out: per control, the count deltas of one
-- scope with event time in [from_ms, at_ms], from the raw log, only of records before each
-- partition's cut (cut_partitions[i] is included below cut_next[i]; other partitions not at all).
-- The raw log is the scope deltas carried by `transitions` rows, and `score_deltas` for the rows
-- written before migration 011 (each delta is in exactly one of them).
SELECT
    control,
    any(category) AS category,
    sum(pass_with) AS pass_w,
    sum(fail_with) AS fail_w,
    sum(hidden_with) AS hidden_w,
    sum(pass_without) AS pass_wo,
    sum(fail_without) AS fail_wo
FROM
(
    SELECT
        control,
        category,
        toInt64(p_w) AS pass_with,
        toInt64(f_w) AS fail_with,
        toInt64(h_w) AS hidden_with,
        toInt64(p_wo) AS pass_without,
        toInt64(f_wo) AS fail_without
    FROM transitions
    ARRAY JOIN
        scope_groups AS g,
        scope_pass_with AS p_w,
        scope_fail_with AS f_w,
        scope_hidden_with AS h_w,
        scope_pass_without AS p_wo,
        scope_fail_without AS f_wo
    WHERE tenant = {tenant:String}
        AND g = {group:String}
        AND event_time >= toDateTime(intDiv({from_ms:Int64}, 1000))
        AND event_time <= toDateTime(intDiv({at_ms:Int64}, 1000))
        AND event_time_ms >= {from_ms:Int64}
        AND event_time_ms <= {at_ms:Int64}
        AND source_offset < transform(source_partition, {cut_partitions:Array(Int32)}, {cut_next:Array(Int64)}, toInt64(-1))
    UNION ALL
    SELECT
        control,
        category,
        toInt64(pass_with) AS pass_with,
        toInt64(fail_with) AS fail_with,
        toInt64(hidden_with) AS hidden_with,
        toInt64(pass_without) AS pass_without,
        toInt64(fail_without) AS fail_without
    FROM score_deltas
    WHERE tenant = {tenant:String}
        AND group = {group:String}
        AND event_time >= toDateTime(intDiv({from_ms:Int64}, 1000))
        AND event_time <= toDateTime(intDiv({at_ms:Int64}, 1000))
        AND event_time_ms >= {from_ms:Int64}
        AND event_time_ms <= {at_ms:Int64}
        AND source_offset < transform(source_partition, {cut_partitions:Array(Int32)}, {cut_next:Array(Int64)}, toInt64(-1))
)
GROUP BY control
HAVING pass_w != 0 OR fail_w != 0 OR hidden_w != 0 OR pass_wo != 0 OR fail_wo != 0
ORDER BY control;

-- name: control_counts_at
-- Per control, the device counts of one scope at instant at_ms (the summed count deltas with
-- event_time_ms <= at_ms): pass_w, fail_w and hidden_w (the part of fail_w hidden from
-- recommendations by an exception) with exceptions, pass_wo and fail_wo without. One row per
-- control with a nonzero count. `posture score` and `posture recommendations` read this and
-- score it with the core's own rules, so their figures equal embedded mode exactly.
SELECT
    control,
    category,
    sum(pass_with) AS pass_w,
    sum(fail_with) AS fail_w,
    sum(hidden_with) AS hidden_w,
    sum(pass_without) AS pass_wo,
    sum(fail_without) AS fail_wo
FROM scope_deltas
WHERE tenant = {tenant:String}
    AND group = {group:String}
    AND event_time <= toDateTime(intDiv({at_ms:Int64}, 1000))
    AND event_time_ms <= {at_ms:Int64}
GROUP BY control, category
HAVING pass_w != 0 OR fail_w != 0 OR hidden_w != 0 OR pass_wo != 0 OR fail_wo != 0
ORDER BY control;

-- name: device_scores_at
-- Device scores at instant at_ms from the transitions table: one row per device of the tenant
-- (device = '' for every device), the sum of its device deltas with event_time_ms <= at_ms
-- (score = points of PASS controls, maximum = points of PASS + FAIL controls; both 0 while the
-- device is retired or inactive). Device deltas are additive: a device lives in one partition.
SELECT
    device,
    sum(device_points_with) AS score_with,
    sum(device_max_with) AS max_score_with,
    if(max_score_with = 0, 0, intDiv(20000 * score_with + max_score_with, 2 * greatest(max_score_with, 1)) / 100) AS percent_with,
    sum(device_points_without) AS score_without,
    sum(device_max_without) AS max_score_without,
    if(max_score_without = 0, 0, intDiv(20000 * score_without + max_score_without, 2 * greatest(max_score_without, 1)) / 100) AS percent_without
FROM transitions
WHERE tenant = {tenant:String}
    AND ({device:String} = '' OR device = {device:String})
    AND event_time <= toDateTime(intDiv({at_ms:Int64}, 1000))
    AND event_time_ms <= {at_ms:Int64}
GROUP BY device
ORDER BY device;

-- name: control_state_current
-- The current state of every control of a device (device = '' for every device of the tenant;
-- control = '' for every control, else only that one; state = '' for any state, else only that
-- one): the device's latest device_state row (by FINAL: ReplacingMergeTree on `version`), its
-- cells named by its catalog (baseline_catalogs), or inline on rows copied from control_state by
-- the upgrade. counted = 0 means the device is retired or inactive and outside every score. The
-- reason and time of each control's last change: control_changes (a cell without one never
-- changed: still the initial NOT_APPLICABLE or UNKNOWN of a device's first event).
SELECT
    device,
    control,
    category,
    state,
    raw_state,
    exception,
    counted
FROM
(
    SELECT
        device,
        counted,
        if(catalog = 0, inline_controls, catalog_controls) AS names,
        if(catalog = 0, inline_categories, catalog_categories) AS cats,
        states,
        raw_states,
        exceptions
    FROM
    (
        SELECT
            device,
            counted,
            catalog,
            controls AS inline_controls,
            categories AS inline_categories,
            states,
            raw_states,
            exceptions
        FROM device_state FINAL
        WHERE tenant = {tenant:String}
            AND ({device:String} = '' OR device = {device:String})
    ) AS s
    ANY LEFT JOIN
    (
        SELECT
            catalog,
            controls AS catalog_controls,
            categories AS catalog_categories
        FROM baseline_catalogs
    ) AS c USING (catalog)
    WHERE length(names) = length(states)
)
ARRAY JOIN
    names AS control,
    cats AS category,
    states AS state,
    raw_states AS raw_state,
    exceptions AS exception
WHERE ({control:String} = '' OR control = {control:String})
    AND ({state:String} = '' OR toString(state) = {state:String})
ORDER BY device, control;

-- name: control_changes
-- When and why each control of the given devices last changed: per (device, control), the reason
-- and event time of its latest transition (in the order the pipeline made them: source offset,
-- then seq), from the devices' own history in `transitions` (control = '' for every control).
SELECT
    device,
    control,
    argMax(reason, (source_offset, seq)) AS reason,
    argMax(event_time_ms, (source_offset, seq)) AS since_ms
FROM transitions
WHERE tenant = {tenant:String}
    AND device IN (SELECT arrayJoin({devices:Array(String)}))
    AND ({control:String} = '' OR control = {control:String})
GROUP BY device, control
ORDER BY device, control;

-- name: tenants_latest
-- Every tenant with score deltas and the event time of its latest one: "now" for the tenant's
-- score-drop alerts (event time, so a backlog is judged by when things happened). The raw log is
-- read only from the earliest of the tenants' latest hours in the trend store on (a tenant's
-- latest delta is in or after its latest hour there), so the cost is that of the recent rows.
SELECT
    tenant,
    max(ms) AS latest_ms
FROM
(
    SELECT
        tenant,
        event_time_ms AS ms
    FROM transitions
    WHERE event_time >= toDateTime(intDiv(
            (SELECT min(b) FROM (SELECT max(bucket_ms) AS b FROM score_rollup WHERE level = 1 AND group = '' GROUP BY tenant)),
            1000))
        AND notEmpty(scope_groups)
    UNION ALL
    SELECT
        tenant,
        event_time_ms AS ms
    FROM score_deltas
    WHERE event_time >= toDateTime(intDiv(
            (SELECT min(b) FROM (SELECT max(bucket_ms) AS b FROM score_rollup WHERE level = 1 AND group = '' GROUP BY tenant)),
            1000))
)
GROUP BY tenant
ORDER BY tenant;

-- name: drop_causes
-- The device-control transitions that cost a scope's score (group = '' for the whole tenant,
-- category = '' for all categories) the most points in (from_ms, to_ms]: per control and device,
-- the points the scope lost (the negated sum of the scope's score deltas of those transitions,
-- micro-points; deltas are exact within the device's partition), largest first, the first 10
-- with a loss. A transition row carries its scope deltas; the rows written before migration 011
-- have theirs in score_deltas, matched with their transitions by lineage (source partition,
-- offset) and control.
SELECT
    control,
    device,
    -sum(pw) AS points_lost
FROM
(
    SELECT
        control,
        device,
        pw
    FROM transitions
    ARRAY JOIN
        scope_groups AS g,
        scope_points_with AS pw
    WHERE tenant = {tenant:String}
        AND g = {group:String}
        AND ({category:String} = '' OR category = {category:String})
        AND event_time >= toDateTime(intDiv({from_ms:Int64}, 1000))
        AND event_time <= toDateTime(intDiv({to_ms:Int64}, 1000))
        AND event_time_ms > {from_ms:Int64}
        AND event_time_ms <= {to_ms:Int64}
    UNION ALL
    SELECT
        control,
        device,
        points_with AS pw
    FROM
    (
        SELECT
            source_partition,
            source_offset,
            control,
            points_with
        FROM score_deltas
        WHERE tenant = {tenant:String}
            AND group = {group:String}
            AND ({category:String} = '' OR category = {category:String})
            AND event_time >= toDateTime(intDiv({from_ms:Int64}, 1000))
            AND event_time <= toDateTime(intDiv({to_ms:Int64}, 1000))
            AND event_time_ms > {from_ms:Int64}
            AND event_time_ms <= {to_ms:Int64}
    ) AS d
    ANY INNER JOIN
    (
        SELECT
            source_partition,
            source_offset,
            control,
            device
        FROM transitions
        WHERE tenant = {tenant:String}
            AND empty(scope_groups)
            AND event_time >= toDateTime(intDiv({from_ms:Int64}, 1000))
            AND event_time <= toDateTime(intDiv({to_ms:Int64}, 1000))
            AND event_time_ms > {from_ms:Int64}
            AND event_time_ms <= {to_ms:Int64}
    ) AS t USING (source_partition, source_offset, control)
)
GROUP BY control, device
HAVING points_lost > 0
ORDER BY points_lost DESC, control, device
LIMIT 10;


-- name: exceptions_current
-- Every exception's latest version (tenant = '' for every tenant), as the pipeline applies them.
SELECT
    tenant,
    id,
    control,
    scope_kind,
    scope_value,
    justification,
    starts_at_ms,
    expires_at_ms,
    author,
    note,
    created_at_ms,
    version
FROM exceptions FINAL
WHERE {tenant:String} = '' OR tenant = {tenant:String}
ORDER BY tenant, id;

-- name: tasks_current
-- Every remediation task's latest version (tenant = '' for every tenant).
SELECT
    tenant,
    id,
    control,
    scope_group,
    due_ms,
    priority,
    notes,
    author,
    created_at_ms,
    status,
    completed_at_ms,
    version
FROM tasks FINAL
WHERE {tenant:String} = '' OR tenant = {tenant:String}
ORDER BY tenant, id;

-- name: control_failing
-- One control in one scope now: the devices failing it without exceptions (fail_wo) and with
-- them (fail_w), the passing devices (pass_wo), the event time of the last change of the failing
-- count (the instant the scope's last failing device was fixed, when fail_wo is 0), and how many
-- trend-store rows there are (0: the control never had a device in the scope). For remediation
-- tasks. The counts are the trend store's (the committed flushes), summed over its 360-day eras;
-- the last change is read from the raw log from the latest hour whose failing count changed in
-- the trend store on (the last change is in or after it), so the cost is that of recent rows.
SELECT
    sum(fail_without) AS fail_wo,
    sum(fail_with) AS fail_w,
    sum(pass_without) AS pass_wo,
    (
        SELECT toInt64(max(ms))
        FROM
        (
            SELECT event_time_ms AS ms
            FROM transitions
            ARRAY JOIN
                scope_groups AS g,
                scope_fail_without AS f_wo
            WHERE tenant = {tenant:String}
                AND g = {group:String}
                AND control = {control:String}
                AND f_wo != 0
                AND event_time >= toDateTime(intDiv((
                    SELECT max(bucket_ms) FROM score_rollup
                    WHERE tenant = {tenant:String} AND group = {group:String} AND level = 1
                        AND control = {control:String} AND fail_without != 0), 1000))
            UNION ALL
            SELECT event_time_ms AS ms
            FROM score_deltas
            WHERE tenant = {tenant:String}
                AND group = {group:String}
                AND control = {control:String}
                AND fail_without != 0
                AND event_time >= toDateTime(intDiv((
                    SELECT max(bucket_ms) FROM score_rollup
                    WHERE tenant = {tenant:String} AND group = {group:String} AND level = 1
                        AND control = {control:String} AND fail_without != 0), 1000))
        )
    ) AS last_change_ms,
    count() AS deltas
FROM score_rollup
WHERE tenant = {tenant:String}
    AND group = {group:String}
    AND level = 4
    AND control = {control:String};

-- name: device_settings_current
-- One device's settings: per key (key '' is the marker of the latest SNAPSHOT), the latest value
-- by event sequence, whether it was removed, and that sequence. A key is present when it is not
-- removed and its sequence is at least the marker's. From device_evidence (one row per event,
-- the settings as arrays) and device_settings (the rows written before migration 012).
SELECT
    key,
    argMax(value, sequence) AS value,
    argMax(removed, sequence) AS removed,
    max(sequence) AS seq,
    argMax(event_time_ms, sequence) AS since_ms
FROM
(
    SELECT
        k AS key,
        v AS value,
        r AS removed,
        sequence,
        event_time_ms
    FROM device_evidence
    ARRAY JOIN
        keys AS k,
        values AS v,
        absent AS r
    WHERE tenant = {tenant:String}
        AND device = {device:String}
    UNION ALL
    SELECT
        key,
        value,
        removed,
        sequence,
        event_time_ms
    FROM device_settings
    WHERE tenant = {tenant:String}
        AND device = {device:String}
)
GROUP BY key
ORDER BY key;

-- name: device_inventory_current
-- Each device's latest inventory (device = '' for every device of the tenant).
SELECT
    device,
    argMax(os_family, sequence) AS os_family,
    argMax(os_version, sequence) AS os_version,
    argMax(hostname, sequence) AS hostname,
    argMax(groups, sequence) AS groups,
    argMax(tags, sequence) AS tags,
    max(sequence) AS seq
FROM device_inventory
WHERE tenant = {tenant:String}
    AND ({device:String} = '' OR device = {device:String})
GROUP BY device
ORDER BY device;

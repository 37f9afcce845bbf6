-- exceptions: SPEC section 3's exceptions (control x device, group, tag or whole tenant), written by
-- `posture exceptions add|expire` and POST /api/v1/tenants/{tenant}/exceptions, read by every
-- running `posture run` (it polls the exceptions_current query) and applied without a restart.
-- One row per version of an exception: expiring one writes a new row with a higher `version`;
-- ReplacingMergeTree keeps the latest per (tenant, id) when parts merge, and readers use FINAL.
-- scope_kind: tenant, device, group or tag (scope_value is '' for tenant). Times are event-time
-- milliseconds; expires_at_ms NULL: never expires.
CREATE TABLE IF NOT EXISTS exceptions
(
    tenant        String,
    id            String,
    control       String,
    scope_kind    String,
    scope_value   String,
    justification String,
    starts_at_ms  Int64,
    expires_at_ms Nullable(Int64),
    author        String,
    note          String,
    created_at_ms Int64,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, id)

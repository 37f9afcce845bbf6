-- tasks: remediation tasks (control, scope, due date, priority, notes), written by `posture tasks`
-- and POST /api/v1/tenants/{tenant}/tasks. One row per version; the latest per (tenant, id) wins
-- (ReplacingMergeTree, readers use FINAL). status: open, completed (set by the system when no
-- device of the scope fails the control any more: completed_at_ms is the event time of the
-- transition that made it so) or cancelled. scope_group '' is the whole tenant. Times in ms.
CREATE TABLE IF NOT EXISTS tasks
(
    tenant          String,
    id              String,
    control         String,
    scope_group     String,
    due_ms          Int64,
    priority        String,
    notes           String,
    author          String,
    created_at_ms   Int64,
    status          String,
    completed_at_ms Nullable(Int64),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, id)

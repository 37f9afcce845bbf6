//! Remediation tasks, stored in ClickHouse's `tasks` table (one row per
//! version; the latest wins).
//!
//! A task asks for one control to be fixed on a scope (a tenant, or one
//! group of it) by a due date. The system confirms it: once no device of
//! the scope fails the control (its FAIL count without exceptions is 0),
//! [`Query::confirm_tasks`] marks it completed, with the event time of the
//! transition that fixed the last failing device. `posture run` confirms
//! every minute (the instance holding partition 0), and every listing
//! confirms first.

use crate::{now_ms, Query, QueryError};
use posture_core::time::format_time;
use serde::{Deserialize, Serialize};

#[derive(clickhouse::Row, Serialize, Deserialize, Clone, Debug)]
pub(crate) struct TaskRow {
    tenant: String,
    id: String,
    control: String,
    scope_group: String,
    due_ms: i64,
    priority: String,
    notes: String,
    author: String,
    created_at_ms: i64,
    status: String,
    completed_at_ms: Option<i64>,
    version: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct FailingRow {
    fail_wo: i64,
    #[allow(dead_code)]
    fail_w: i64,
    pass_wo: i64,
    last_change_ms: i64,
    deltas: u64,
}

/// A new task, as the CLI and `POST /api/v1/tenants/{tenant}/tasks` take it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    #[serde(default)]
    /// Default: generated (`task-` and a unique suffix). Otherwise 1 to 128 letters, digits,
    /// `.`, `_` or `-`, not yet used in the tenant.
    pub id: Option<String>,
    /// Control id to fix on the scope; it must be in the baselines.
    pub control: String,
    /// One device group; default the whole tenant.
    #[serde(default)]
    pub group: Option<String>,
    /// Due date (RFC 3339 or epoch ms).
    pub due: String,
    /// low, medium, high or critical; default medium.
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    /// Free text for whoever fixes it; at most
    /// [`MAX_TEXT_BYTES`](crate::exceptions::MAX_TEXT_BYTES) bytes.
    pub notes: String,
    /// Who creates it (the API sets its token's name).
    #[serde(default)]
    pub author: String,
    /// When it was opened (RFC 3339 or epoch ms); default now. For a task recorded after the
    /// fact, or opened from an alert of a replayed stream (the demo's tasks are opened at their
    /// alert's event time); at most a minute in the future.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A task as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Tenant id.
    pub tenant: String,
    /// Task id, unique in the tenant.
    pub id: String,
    /// Control id to fix.
    pub control: String,
    /// The control's title in the baselines (empty if the baselines no longer have it).
    pub title: String,
    /// Device group the task covers; `None`: the whole tenant.
    pub group: Option<String>,
    /// Due date (RFC 3339).
    pub due: String,
    /// low, medium, high or critical.
    pub priority: String,
    /// Free text given when it was created.
    pub notes: String,
    /// Who created it (through the API: the token's name).
    pub author: String,
    /// Wall-clock time it was created (RFC 3339).
    pub created_at: String,
    /// open or completed.
    pub status: String,
    /// When the scope's last failing device was fixed (event time).
    pub completed_at: Option<String>,
    /// Hours from creation to the verified fix (completed tasks).
    pub hours_to_fix: Option<f64>,
    /// Open and past its due date.
    pub overdue: bool,
}

/// The tasks report: how fast fixes are verified, and what is overdue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Tenant id.
    pub tenant: String,
    /// Tasks not yet verified fixed.
    pub open: usize,
    /// Tasks whose fix is verified.
    pub completed: usize,
    /// Open tasks past their due date (the length of `overdue_tasks`).
    pub overdue: usize,
    /// Mean and longest hours from creation to verified fix, over completed tasks.
    pub mean_hours_to_fix: Option<f64>,
    /// Longest hours to a verified fix; `None` while no task is completed.
    pub max_hours_to_fix: Option<f64>,
    /// The overdue tasks themselves, in listing order.
    pub overdue_tasks: Vec<TaskView>,
}

const PRIORITIES: [&str; 4] = ["low", "medium", "high", "critical"];

impl Query {
    async fn task_rows(&self, tenant: &str) -> Result<Vec<TaskRow>, QueryError> {
        self.rows("tasks_current", &[("tenant", tenant.into())]).await
    }

    fn task_view(&self, r: &TaskRow, now: i64) -> TaskView {
        let title = self
            .catalog
            .control_idx(&r.control)
            .map(|c| self.catalog.controls[c as usize].title.clone())
            .unwrap_or_default();
        TaskView {
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            control: r.control.clone(),
            title,
            group: (!r.scope_group.is_empty()).then(|| r.scope_group.clone()),
            due: format_time(r.due_ms),
            priority: r.priority.clone(),
            notes: r.notes.clone(),
            author: r.author.clone(),
            created_at: format_time(r.created_at_ms),
            status: r.status.clone(),
            completed_at: r.completed_at_ms.map(format_time),
            hours_to_fix: r
                .completed_at_ms
                .map(|c| ((c - r.created_at_ms).max(0) as f64 / 3_600_000.0 * 100.0).round() / 100.0),
            overdue: r.status == "open" && now > r.due_ms,
        }
    }

    /// Creates a task after checking it: a known control, a due date, a
    /// priority, an author, an unused id.
    pub async fn create_task(&self, tenant: &str, new: NewTask) -> Result<TaskView, QueryError> {
        let bad = |m: String| Err(QueryError::BadRequest(m));
        if tenant.is_empty() {
            return bad("the tenant is empty".into());
        }
        if self.catalog.control_idx(&new.control).is_none() {
            return bad(format!("control {:?} is not in the baselines", new.control));
        }
        let due = posture_core::time::parse_time(&new.due).map_err(|e| QueryError::BadRequest(format!("due: {e}")))?;
        let priority = new.priority.unwrap_or_else(|| "medium".into());
        if !PRIORITIES.contains(&priority.as_str()) {
            return bad(format!("priority {priority:?}: expected low, medium, high or critical"));
        }
        if new.author.trim().is_empty() {
            return bad("author is required".into());
        }
        use crate::exceptions::{check_id, check_len, MAX_NAME_BYTES, MAX_PER_TENANT, MAX_TEXT_BYTES};
        check_len("author", &new.author, MAX_NAME_BYTES)?;
        check_len("group", new.group.as_deref().unwrap_or_default(), MAX_NAME_BYTES)?;
        check_len("notes", &new.notes, MAX_TEXT_BYTES)?;
        let now = now_ms();
        let created_at = match new.created_at.as_deref() {
            None | Some("") => now,
            Some(t) => {
                let t = posture_core::time::parse_time(t)
                    .map_err(|e| QueryError::BadRequest(format!("created_at: {e}")))?;
                if t > now + 60_000 {
                    return bad(format!("created_at {} is in the future", format_time(t)));
                }
                t
            }
        };
        let id = new
            .id
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| format!("task-{}-{:04x}", now, fastrand::u16(..)));
        check_id("task", &id)?;
        let rows = self.task_rows(tenant).await?;
        if rows.iter().any(|r| r.id == id) {
            return bad(format!("task {id:?} already exists in tenant {tenant:?}"));
        }
        if rows.len() >= MAX_PER_TENANT {
            return bad(format!(
                "tenant {tenant:?} has {MAX_PER_TENANT} tasks, the most one tenant may have"
            ));
        }
        let row = TaskRow {
            tenant: tenant.to_string(),
            id,
            control: new.control,
            scope_group: new.group.unwrap_or_default(),
            due_ms: due,
            priority,
            notes: new.notes,
            author: new.author,
            created_at_ms: created_at,
            status: "open".into(),
            completed_at_ms: None,
            version: crate::exceptions::next_version(0),
        };
        self.insert("tasks", &row).await?;
        Ok(self.task_view(&row, now))
    }

    /// The completed row of an open task whose scope has no device failing its control any
    /// more (devices of the scope pass it and none fails), with the event time of the last
    /// change as its completion; `None` while it is not fixed. Reads only.
    async fn completion(&self, r: &TaskRow) -> Result<Option<TaskRow>, QueryError> {
        if r.status != "open" {
            return Ok(None);
        }
        let f: Vec<FailingRow> = self
            .rows(
                "control_failing",
                &[
                    ("tenant", r.tenant.as_str().into()),
                    ("group", r.scope_group.as_str().into()),
                    ("control", r.control.as_str().into()),
                ],
            )
            .await?;
        let Some(f) = f.first() else { return Ok(None) };
        // A scope the control never applied to (no delta, or no passing device) is not a fix.
        if f.deltas == 0 || f.fail_wo > 0 || f.pass_wo == 0 {
            return Ok(None);
        }
        let mut done = r.clone();
        done.status = "completed".into();
        done.completed_at_ms = Some(f.last_change_ms.max(r.created_at_ms));
        done.version = crate::exceptions::next_version(r.version);
        Ok(Some(done))
    }

    /// System confirmation: every open task (of `tenant`, or of every
    /// tenant when empty) whose scope has no device failing its control any
    /// more becomes completed, in ClickHouse. Run by the pipeline (the
    /// instance holding partition 0) and by `posture tasks confirm`; readers
    /// only see it ([`Query::tasks`]). Returns the tasks completed by this call.
    pub async fn confirm_tasks(&self, tenant: &str) -> Result<Vec<TaskView>, QueryError> {
        let now = now_ms();
        let mut done = Vec::new();
        for r in self.task_rows(tenant).await? {
            if let Some(c) = self.completion(&r).await? {
                self.insert("tasks", &c).await?;
                done.push(self.task_view(&c, now));
            }
        }
        Ok(done)
    }

    /// The tasks of `tenant`, open ones whose scope is fixed shown completed (as the next
    /// confirmation will write them). Writes nothing: a read-only token reads only.
    pub async fn tasks(&self, tenant: &str) -> Result<Vec<TaskView>, QueryError> {
        let now = now_ms();
        let mut out = Vec::new();
        for r in self.task_rows(tenant).await? {
            let shown = self.completion(&r).await?.unwrap_or(r);
            out.push(self.task_view(&shown, now));
        }
        Ok(out)
    }

    /// Time from creation to verified fix, and the overdue tasks.
    pub async fn task_report(&self, tenant: &str) -> Result<TaskReport, QueryError> {
        let tasks = self.tasks(tenant).await?;
        let fixes: Vec<f64> = tasks.iter().filter_map(|t| t.hours_to_fix).collect();
        let overdue_tasks: Vec<TaskView> = tasks.iter().filter(|t| t.overdue).cloned().collect();
        Ok(TaskReport {
            tenant: tenant.to_string(),
            open: tasks.iter().filter(|t| t.status == "open").count(),
            completed: tasks.iter().filter(|t| t.status == "completed").count(),
            overdue: overdue_tasks.len(),
            mean_hours_to_fix: (!fixes.is_empty())
                .then(|| (fixes.iter().sum::<f64>() / fixes.len() as f64 * 100.0).round() / 100.0),
            max_hours_to_fix: fixes.iter().copied().reduce(f64::max),
            overdue_tasks,
        })
    }
}

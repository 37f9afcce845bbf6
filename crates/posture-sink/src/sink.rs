//! The writer: one INSERT per table per [`Batch`] (the tables concurrently),
//! retried with bounded exponential backoff.

use crate::rollup::{Progress, Rollup};
use crate::rows::Batch;
use clickhouse::{Client, Row, RowWrite};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An INSERT failed for good: a permanent error, or a transient one on every attempt.
    #[error("insert into {table} failed after {attempts} attempt(s) ({rows} rows not written): {source}")]
    Insert {
        /// The table.
        table: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Rows of that table left in the batch.
        rows: usize,
        /// The last error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The batch still holds changed devices whose `device_state` rows were not made
    /// ([`crate::Batch::settle`] was not called for their partition before the write): writing
    /// it would lose them. A bug of the caller, reported instead of losing rows.
    #[error(
        "the batch holds {devices} changed device(s) whose state rows were not made (Batch::settle \
         was not called for their partition before the write); nothing was written"
    )]
    Unsettled {
        /// Devices waiting.
        devices: usize,
    },
    /// A retried INSERT found some but not all of its rows in the table:
    /// neither sending them again nor skipping them would be exact.
    #[error(
        "insert into {table}: after a failed attempt, {found} of its {rows} rows (for score_rollup: \
         partition cuts) are in the table; not sent again (duplicates) nor taken as written"
    )]
    PartlyWritten {
        /// The table.
        table: &'static str,
        /// Rows of the INSERT.
        rows: usize,
        /// Rows of its source positions found in the table.
        found: u64,
    },
    /// A migration statement failed.
    #[error("migration {file} failed at `{statement}`: {source}")]
    Migration {
        /// The migration file (or the runner's own step, in parentheses).
        file: String,
        /// The first line of the failing statement.
        statement: String,
        /// The server's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// A migration recorded as applied has different text now.
    #[error(
        "migration {file} was changed after it was applied (checksum {recorded:#x} recorded, {now:#x} now); \
         add a new migration instead of editing an applied one"
    )]
    MigrationChanged {
        /// The migration file.
        file: String,
        /// Checksum in `schema_migrations`.
        recorded: u64,
        /// Checksum of the embedded text.
        now: u64,
    },
    /// A database name that is not a plain identifier.
    #[error("invalid database name {0:?}: use letters, digits and underscores")]
    InvalidDatabase(String),
    /// A migration statement that cannot run on a cluster, or a bad cluster name.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A trend query could not be rendered.
    #[error("query {query}: {message}")]
    Query {
        /// The query's name.
        query: String,
        /// What is wrong.
        message: String,
    },
}

/// How [`Sink::write`] retries a failed INSERT: the pipeline's one retry policy type.
pub use posture_stage::RetryPolicy;

/// Writes [`Batch`]es to the three tables of one database.
#[derive(Clone)]
pub struct Sink {
    client: Client,
    retry: RetryPolicy,
    on_retry: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    rows_written: Arc<AtomicU64>,
    everywhere_quorum: Option<u64>,
}

impl Sink {
    /// A sink writing through `client`, whose default database holds the tables (see
    /// [`crate::migrate()`]). ClickHouse 18.16 needs `client.with_validation(false)`.
    pub fn new(client: Client) -> Sink {
        Sink {
            client,
            retry: RetryPolicy::default(),
            on_retry: None,
            rows_written: Arc::new(AtomicU64::new(0)),
            everywhere_quorum: None,
        }
    }

    /// On a sharded cluster: the `insert_quorum` of INSERTs into the tables every node holds
    /// whole ([`crate::cluster::everywhere`]: `score_rollup`, `baseline_catalogs`), the number
    /// of nodes; `client`'s own quorum is the replicas of one shard. With it, every node holds
    /// every commit that has returned, and an instance restoring a partition through any node
    /// reads its latest cut (a cut read from a lagging node would have the replay summed twice).
    pub fn with_everywhere_quorum(mut self, nodes: u64) -> Sink {
        self.everywhere_quorum = (nodes > 1).then_some(nodes);
        self
    }

    /// Calls `f` before every retry of an INSERT (e.g. to count retries in a
    /// metric).
    pub fn with_on_retry(mut self, f: std::sync::Arc<dyn Fn() + Send + Sync>) -> Sink {
        self.on_retry = Some(f);
        self
    }

    /// The same sink with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Sink {
        self.retry = retry;
        self
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Writes the batch: one INSERT per non-empty table, concurrently, each retried on transient
    /// errors (network errors, timeouts, server errors that say "try again") per the
    /// [`RetryPolicy`]: first `exception_syncs` (a partition restored later takes each recorded
    /// exception change again right before its record) and `baseline_catalogs`, then the tables
    /// of rows concurrently, then the rollup and the cut rows (`score_rollup`, one INSERT: the
    /// flush's commit, see [`crate::rollup`]) beside `device_state` (whose rows need the
    /// transitions that made them). A table is removed
    /// from the batch as soon as its INSERT succeeds, so after an error the batch holds exactly
    /// the tables not yet written, and calling `write` again resumes; on success the batch is
    /// empty (and its `seq` numbering restarts).
    ///
    /// An INSERT that timed out or lost its connection may still have been committed by the
    /// server. So before sending the rows of an append-only table (`transitions`,
    /// `exception_syncs`) again, a retry counts the rows of their source
    /// positions in the table: all there, the INSERT had been committed and is not sent again;
    /// none, it is sent. (The other tables are ReplacingMergeTrees whose queries take the
    /// latest version: a duplicate there changes nothing.)
    pub async fn write(&self, batch: &mut Batch) -> Result<(), SinkError> {
        if batch.unsettled() > 0 {
            return Err(SinkError::Unsettled {
                devices: batch.unsettled(),
            });
        }
        // Exception changes first: a restored partition takes each recorded change again right
        // before its record, so a recorded change whose rows were lost is made again exactly.
        self.insert_table("exception_syncs", &batch.exception_syncs, true)
            .await?;
        batch.exception_syncs.clear();
        // A catalog before the device states that name it.
        self.insert_table("baseline_catalogs", &batch.catalogs, false).await?;
        batch.catalogs.clear();
        batch.coalesce();
        // The tables are independent: their INSERTs run concurrently, so a flush costs the
        // slowest INSERT, not the sum of all (each has a fixed cost of a request and a part).
        let (b, d, e) = tokio::join!(
            self.insert_table("transitions", &batch.transitions, true),
            self.insert_table("device_evidence", &batch.device_evidence, false),
            self.insert_table("device_inventory", &batch.device_inventory, false),
        );
        // Remove what was written, so a failed write resends only the rest.
        let mut first_error = None;
        let mut done = |r: Result<(), SinkError>, clear: &mut dyn FnMut()| match r {
            Ok(()) => clear(),
            Err(e) => {
                if first_error.is_some() {
                    // Returned is the first; the others are logged (each table is resent).
                    tracing::error!("{e}");
                } else {
                    first_error = Some(e);
                }
            }
        };
        done(b, &mut || batch.transitions.clear());
        done(d, &mut || batch.device_evidence.clear());
        done(e, &mut || batch.device_inventory.clear());
        if let Some(e) = first_error {
            return Err(e);
        }
        // The commit: the rollup and the cut rows in one INSERT, once every row they stand
        // for is written (a reader that sees a cut finds all rows below it in every table);
        // beside it the device states, also after the transitions (a listed state finds the
        // transition that made it: control_changes).
        let (states, commit) = tokio::join!(
            self.insert_table("device_state", &batch.device_state, false),
            self.write_rollup(&mut batch.rollup),
        );
        if states.is_ok() {
            batch.device_state.clear();
        }
        commit?;
        states?;
        batch.clear();
        Ok(())
    }

    /// The sum of the cut rows of each of `partitions` in `score_rollup` (absent: zero).
    pub async fn cuts(&self, partitions: &[i32]) -> clickhouse::error::Result<BTreeMap<i32, Progress>> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct CutSum {
            partition: i64,
            next_offset: i64,
            clock_ms: i64,
        }
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
        let sql = format!(
            "SELECT bucket_ms AS partition, sum(next_offset) AS next_offset, sum(clock_ms) AS clock_ms \
             FROM score_rollup WHERE tenant = '' AND group = '' AND level = 0 AND bucket_ms IN ({}) \
             GROUP BY partition",
            list.join(", ")
        );
        let rows: Vec<CutSum> = self.client.query(&sql).fetch_all().await?;
        let mut out: BTreeMap<i32, Progress> = partitions.iter().map(|&p| (p, Progress::default())).collect();
        for r in rows {
            out.insert(
                r.partition as i32,
                Progress {
                    next_offset: r.next_offset,
                    clock_ms: r.clock_ms,
                },
            );
        }
        Ok(out)
    }

    /// Writes the batch's rollup and cut rows as one INSERT (one block: a reader sees all of it
    /// or none), retried like the other tables. Before a retry it reads the cuts of the moved
    /// partitions: all at their new values, the failed attempt was committed (not sent again);
    /// all at their old values, it is sent again; anything else is [`SinkError::PartlyWritten`].
    async fn write_rollup(&self, rollup: &mut Rollup) -> Result<(), SinkError> {
        let table = "score_rollup";
        let fail = |attempts, rows, source| SinkError::Insert {
            table,
            attempts,
            rows,
            source,
        };
        let unknown = rollup.unknown_partitions();
        if !unknown.is_empty() {
            // A writer that did not read its partitions' cuts at start-up (no state store):
            // count from what the table holds.
            let cuts = self.cuts(&unknown).await.map_err(|e| fail(1, 0, e))?;
            for (p, c) in cuts {
                rollup.set_committed(p, c);
            }
        }
        if rollup.is_empty() {
            return Ok(());
        }
        let rows = rollup.rows();
        let moves = rollup.moves();
        // insert_deduplicate = 0: a replicated table (on a cluster) drops a block identical to a
        // recent one, and two flushes can write identical rollup blocks (a flush of one unusable
        // record each: the same cut row, offsets +1, clock +0); the second is a real commit and
        // must be summed. Retries need no such help: the cut check below says whether a failed
        // attempt landed.
        let client = self
            .client_for("score_rollup")
            .with_setting("max_insert_block_size", MAX_ROLLUP_ROWS.to_string())
            .with_setting("insert_deduplicate", "0");
        // Before a retry: the cuts tell whether the failed attempt was committed (one part).
        let landed = async || {
            let parts: Vec<i32> = moves.iter().map(|m| m.0).collect();
            let now = self.cuts(&parts).await?;
            Ok(if moves.iter().all(|(p, _, to)| now.get(p) == Some(to)) {
                Landed::All
            } else if moves.iter().all(|(p, from, _)| now.get(p) == Some(from)) {
                Landed::None
            } else {
                let found = moves.iter().filter(|(p, _, to)| now.get(p) == Some(to)).count();
                Landed::Partly(found as u64, moves.len())
            })
        };
        // One body, sent as one compressed frame: a connection cut anywhere in it makes the
        // server fail the INSERT ("cannot read all data"), never commit the rows before the cut
        // (a body sent in several chunks can be cut between two, and the server may then take the
        // chunks it got as the whole INSERT: data rows without the cut rows that follow them).
        let mut body = Vec::with_capacity(rows.len() * 192);
        for r in &rows {
            serde_json::to_writer(&mut body, r).expect("a rollup row always serializes");
            body.push(b'\n');
        }
        let body = bytes::Bytes::from(body);
        let timeout = self.retry.timeout;
        let send = async || {
            let mut insert = client.insert_formatted_with(format!("INSERT INTO {table} FORMAT JSONEachRow"));
            if let Some(t) = timeout {
                insert = insert.with_timeouts(Some(t), Some(t));
            }
            insert.send(body.clone()).await?;
            insert.end().await
        };
        self.insert_retrying(table, rows.len(), send, (!moves.is_empty()).then_some(landed))
            .await?;
        self.rows_written
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        rollup.written();
        Ok(())
    }

    /// Inserts `rows` into `table` (retrying) unless there are none;
    /// `append_only`: check before a retry whether the rows landed.
    async fn insert_table<T>(&self, table: &'static str, rows: &[T], append_only: bool) -> Result<(), SinkError>
    where
        T: RowWrite + Sourced + for<'a> Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        // Append-only: before a retry, count the rows of the batch's source positions, per
        // partition. On a sharded cluster one INSERT is one block per shard, and a shard can
        // commit while another fails: a partition whose rows all landed is not sent again, one
        // with none is; a partition with some of its rows is an error (neither is exact).
        let landed_partitions = std::sync::Mutex::new(std::collections::BTreeSet::<i32>::new());
        let landed = async || {
            let found = self.rows_landed(table, rows).await?;
            let mut want: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
            for r in rows {
                *want.entry(r.source().0).or_default() += 1;
            }
            let mut done = std::collections::BTreeSet::new();
            for (p, n) in &want {
                match found.get(p).copied().unwrap_or(0) {
                    0 => {}
                    f if f == *n => {
                        done.insert(*p);
                    }
                    _ => return Ok(Landed::Partly(found.values().sum(), rows.len())),
                }
            }
            Ok(if done.len() == want.len() {
                Landed::All
            } else {
                *landed_partitions.lock().expect("not poisoned") = done;
                Landed::None
            })
        };
        let client = self.client_for(table);
        let send = async || {
            let skip = landed_partitions.lock().expect("not poisoned").clone();
            if skip.is_empty() {
                insert_rows(&client, table, rows.iter(), self.retry.timeout).await
            } else {
                tracing::warn!(table, partitions = ?skip, "part of the failed INSERT had been committed (a sharded cluster); sending the rest");
                let rest = rows.iter().filter(|r| !skip.contains(&r.source().0));
                insert_rows(&client, table, rest, self.retry.timeout).await
            }
        };
        self.insert_retrying(table, rows.len(), send, append_only.then_some(landed))
            .await
    }

    /// The client for INSERTs into `table`: on a sharded cluster, a table held whole by every
    /// node waits for the quorum of all of them (see [`Sink::with_everywhere_quorum`]).
    fn client_for(&self, table: &str) -> Client {
        match self.everywhere_quorum {
            Some(n) if crate::cluster::everywhere(table) => {
                self.client.clone().with_setting("insert_quorum", n.to_string())
            }
            _ => self.client.clone(),
        }
    }

    /// How many rows of `table` come from the source positions of `rows`, per partition
    /// (per partition, the range of their offsets: a batch holds every row
    /// of its records, and no other batch has rows of those offsets).
    async fn rows_landed<T: Sourced>(
        &self,
        table: &str,
        rows: &[T],
    ) -> clickhouse::error::Result<std::collections::BTreeMap<i32, u64>> {
        let mut ranges: std::collections::BTreeMap<i32, (i64, i64)> = std::collections::BTreeMap::new();
        for r in rows {
            let (p, o) = r.source();
            let e = ranges.entry(p).or_insert((o, o));
            e.0 = e.0.min(o);
            e.1 = e.1.max(o);
        }
        let cond: Vec<String> = ranges
            .iter()
            .map(|(p, (lo, hi))| {
                format!("(source_partition = {p} AND source_offset >= {lo} AND source_offset <= {hi})")
            })
            .collect();
        Ok(self
            .client
            .query(&format!(
                "SELECT source_partition, count() FROM {table} WHERE {} GROUP BY source_partition",
                cond.join(" OR ")
            ))
            .fetch_all::<(i32, u64)>()
            .await?
            .into_iter()
            .collect())
    }

    /// Inserts `rows` into `table` through `client`, retrying transient errors per the
    /// [`RetryPolicy`]. Before a retry, `landed` (when given) says whether the failed attempt was
    /// committed after all: all of it (not sent again), none (sent again), or part (an error).
    async fn insert_retrying(
        &self,
        table: &'static str,
        rows: usize,
        send: impl AsyncFn() -> clickhouse::error::Result<()>,
        landed: Option<impl AsyncFn() -> clickhouse::error::Result<Landed>>,
    ) -> Result<(), SinkError> {
        let max = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let look = match &landed {
                Some(f) if attempt > 1 => Some(f().await),
                _ => None,
            };
            let result = match look {
                Some(Ok(Landed::All)) => {
                    tracing::warn!(table, attempt, "the failed INSERT had been committed; not sent again");
                    return Ok(());
                }
                Some(Ok(Landed::Partly(found, of))) => return Err(SinkError::PartlyWritten { table, rows: of, found }),
                Some(Err(e)) => Err(e),
                Some(Ok(Landed::None)) | None => send().await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < max && is_transient(&e) => {
                    if let Some(f) = &self.on_retry {
                        f();
                    }
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(table, attempt, "insert failed, retrying: {e}");
                    }
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(SinkError::Insert {
                        table,
                        attempts: attempt,
                        rows,
                        source,
                    })
                }
            }
        }
    }

    /// Rows written into `score_rollup` since the sink was made (for metrics).
    pub fn rollup_rows_written(&self) -> u64 {
        self.rows_written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a look before retrying an INSERT found of its failed attempt.
enum Landed {
    /// Nothing: send it again.
    None,
    /// All of it: it was committed, do not send it again.
    All,
    /// This many of its rows (for the rollup: of its partitions' cuts) out of that many, not
    /// all: neither sending again nor skipping would be exact.
    Partly(u64, usize),
}

/// The most rows one rollup INSERT may hold: the sink sets `max_insert_block_size` to this, so
/// the server keeps the INSERT in one block (one part: atomic). Batches stay far below it.
pub const MAX_ROLLUP_ROWS: usize = 16 << 20;

/// One INSERT of `rows` into `table` through `client`.
async fn insert_rows<'r, T>(
    client: &Client,
    table: &str,
    rows: impl IntoIterator<Item = &'r T>,
    timeout: Option<Duration>,
) -> clickhouse::error::Result<()>
where
    T: RowWrite + for<'a> Row<Value<'a> = T> + 'r,
{
    let mut insert = client.insert::<T>(table).await?;
    if let Some(t) = timeout {
        insert = insert.with_timeouts(Some(t), Some(t));
    }
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// A row that says which input record it came from (partition, offset).
pub trait Sourced {
    /// (source_partition, source_offset).
    fn source(&self) -> (i32, i64);
}

macro_rules! sourced {
    ($($t:ty),*) => {$(
        impl Sourced for $t {
            fn source(&self) -> (i32, i64) {
                (self.source_partition, self.source_offset)
            }
        }
    )*};
}

sourced!(
    crate::rows::ScoreDeltaRow,
    crate::rows::TransitionRow,
    crate::rows::ControlStateRow,
    crate::rows::DeviceStateRow,
    crate::rows::SettingRow,
    crate::rows::EvidenceRow,
    crate::rows::InventoryRow,
    crate::rows::SyncRow
);

/// A catalog comes from no record: written whole each time (never looked for before a retry).
impl Sourced for crate::rows::CatalogRow {
    fn source(&self) -> (i32, i64) {
        (-1, -1)
    }
}

/// Whether an error may go away when the same INSERT is sent again.
pub fn is_transient(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match e {
        Error::Network(_) | Error::TimedOut => true,
        Error::BadResponse(msg) => match server_error_code(msg) {
            Some(code) => TRANSIENT_CODES.contains(&code),
            // No ClickHouse error code: an HTTP error from a proxy or an overloaded server.
            None => true,
        },
        _ => false,
    }
}

/// ClickHouse error codes worth retrying: timeouts, network and socket errors, too many parts
/// or queries, memory limits, read-only replicas, Keeper trouble, unknown insert status, too few
/// live replicas for the insert quorum (285) and a quorum an earlier INSERT still waits for (286).
const TRANSIENT_CODES: &[u32] = &[
    3, 159, 164, 202, 203, 209, 210, 225, 236, 241, 242, 252, 285, 286, 319, 394, 425, 999,
];

/// The error code of a ClickHouse exception text (`Code: 60, e.displayText() = ...` in 18.16,
/// `Code: 60. DB::Exception: ...` later).
pub fn server_error_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_errors() {
        use clickhouse::error::Error;
        let unknown_table =
            "Code: 60, e.displayText() = DB::Exception: Table x.score_deltas doesn't exist., e.what() = DB::Exception";
        assert_eq!(server_error_code(unknown_table), Some(60));
        assert!(!is_transient(&Error::BadResponse(unknown_table.into())));
        let too_many_parts = "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)";
        assert!(is_transient(&Error::BadResponse(too_many_parts.into())));
        assert!(is_transient(&Error::BadResponse("502 Bad Gateway".into())));
        assert!(is_transient(&Error::TimedOut));
        assert!(!is_transient(&Error::NotEnoughData));
    }
}

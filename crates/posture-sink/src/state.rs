//! Durable pipeline state in ClickHouse: engine snapshots per input
//! partition (`engine_snapshots`), and the output watermarks that make a
//! replay write nothing twice.
//!
//! * [`SnapshotStore::save`] writes a snapshot as chunks in one INSERT;
//!   [`SnapshotStore::load`] reads the latest complete one.
//! * [`SnapshotStore::watermarks`] gives, per output table, the highest
//!   source offset of an input partition whose rows are in the table: rows
//!   of a replayed record at or below it are already there.

use crate::sink::{is_transient, RetryPolicy};
use crate::SinkError;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

/// The output tables whose rows carry lineage, in [`Watermarks`] order.
pub const LINEAGE_TABLES: [&str; 2] = ["transitions", "device_state"];

/// Per table of [`LINEAGE_TABLES`], the highest `source_offset` written for
/// one partition (-1: none).
pub type Watermarks = [i64; 2];

#[derive(Row, Serialize, Deserialize)]
struct ChunkRow {
    topic: String,
    partition: i32,
    next_offset: i64,
    chunk: u32,
    chunks: u32,
    total_bytes: u64,
    created: u32,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[derive(Row, Deserialize)]
struct DataRow {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[derive(Row, Deserialize)]
struct OffsetRow {
    next_offset: i64,
}

#[derive(Row, Deserialize)]
struct MaxRow {
    rows: u64,
    max_offset: i64,
}

/// Reads and writes `engine_snapshots` and the watermarks.
#[derive(Clone)]
pub struct SnapshotStore {
    client: Client,
    chunk_bytes: usize,
    retry: RetryPolicy,
    /// Where older snapshots are deleted: `engine_snapshots`, or on a sharded cluster the local
    /// tables `ON CLUSTER` (a Distributed table takes no mutation).
    delete_from: String,
}

impl SnapshotStore {
    /// A store using `client`'s database (migrated: see [`crate::migrate()`]).
    pub fn new(client: Client) -> SnapshotStore {
        SnapshotStore {
            client,
            chunk_bytes: 4 << 20,
            retry: RetryPolicy::default(),
            delete_from: "engine_snapshots".into(),
        }
    }

    /// On a sharded cluster (`crate::cluster::Layout::Sharded`): `engine_snapshots` of
    /// `database` is a Distributed table, which takes no `ALTER ... DELETE`; older snapshots are
    /// deleted from the shards' local tables, `ON CLUSTER cluster`.
    pub fn sharded(mut self, database: &str, cluster: &str) -> SnapshotStore {
        self.delete_from = format!(
            "{}.engine_snapshots ON CLUSTER {cluster}",
            crate::cluster::local_database(database)
        );
        self
    }

    /// Chunk size (default 4 MiB).
    pub fn with_chunk_bytes(mut self, n: usize) -> SnapshotStore {
        self.chunk_bytes = n.max(1);
        self
    }

    /// Retries of each statement on transient errors.
    pub fn with_retry(mut self, retry: RetryPolicy) -> SnapshotStore {
        self.retry = retry;
        self
    }

    async fn retrying<T, F, Fut>(&self, what: &'static str, mut f: F) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<T>>,
    {
        let max = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < max && is_transient(&e) => {
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(SinkError::Insert {
                        table: what,
                        attempts: attempt,
                        rows: 0,
                        source,
                    })
                }
            }
        }
    }

    /// Stores `bytes` as the snapshot of (`topic`, `partition`) at
    /// `next_offset`, then deletes that partition's older snapshots (best
    /// effort: a failed delete only leaves space used).
    pub async fn save(&self, topic: &str, partition: i32, next_offset: i64, bytes: &[u8]) -> Result<(), SinkError> {
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(self.chunk_bytes).collect()
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let rows: Vec<ChunkRow> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| ChunkRow {
                topic: topic.to_string(),
                partition,
                next_offset,
                chunk: i as u32,
                chunks: chunks.len() as u32,
                total_bytes: bytes.len() as u64,
                created,
                data: c.to_vec(),
            })
            .collect();
        self.retrying("engine_snapshots", || async {
            let mut insert = self.client.insert::<ChunkRow>("engine_snapshots").await?;
            for r in &rows {
                insert.write(r).await?;
            }
            insert.end().await
        })
        .await?;
        let deleted = self
            .client
            .query(&format!(
                "ALTER TABLE {} DELETE WHERE topic = ? AND partition = ? AND next_offset < ?",
                self.delete_from
            ))
            .bind(topic)
            .bind(partition)
            .bind(next_offset)
            .execute()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(partition, "older snapshots not deleted (they only use space): {e}");
        }
        Ok(())
    }

    /// The latest complete snapshot of (`topic`, `partition`): its offset
    /// and bytes, or `None` when there is none.
    pub async fn load(&self, topic: &str, partition: i32) -> Result<Option<(i64, Vec<u8>)>, SinkError> {
        let latest: Vec<OffsetRow> = self
            .retrying("engine_snapshots", || {
                self.client
                    .query(
                        "SELECT next_offset FROM engine_snapshots WHERE topic = ? AND partition = ? \
                         GROUP BY next_offset HAVING uniqExact(chunk) = any(chunks) \
                         ORDER BY next_offset DESC LIMIT 1",
                    )
                    .bind(topic)
                    .bind(partition)
                    .fetch_all()
            })
            .await?;
        let Some(offset) = latest.first().map(|r| r.next_offset) else {
            return Ok(None);
        };
        // A retried INSERT may have written a chunk twice: one row per chunk.
        let rows: Vec<DataRow> = self
            .retrying("engine_snapshots", || {
                self.client
                    .query(
                        "SELECT data FROM engine_snapshots WHERE topic = ? AND partition = ? AND next_offset = ? \
                         ORDER BY chunk LIMIT 1 BY chunk",
                    )
                    .bind(topic)
                    .bind(partition)
                    .bind(offset)
                    .fetch_all()
            })
            .await?;
        let mut bytes = Vec::with_capacity(rows.iter().map(|r| r.data.len()).sum());
        for r in rows {
            bytes.extend_from_slice(&r.data);
        }
        Ok(Some((offset, bytes)))
    }

    /// The latest set of exceptions recorded for input `partition` in
    /// `exception_syncs` (the JSON array), if any: the set its written
    /// output reflects.
    pub async fn last_exception_sync(&self, partition: i32) -> Result<Option<String>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Last {
            exceptions: String,
        }
        let sql = "SELECT exceptions FROM exception_syncs WHERE source_partition = ? \
                   ORDER BY source_offset DESC, written_at DESC LIMIT 1";
        let rows: Vec<Last> = self
            .retrying("exception_syncs", || self.client.query(sql).bind(partition).fetch_all())
            .await?;
        Ok(rows.into_iter().next().map(|r| r.exceptions))
    }

    /// Every exception set recorded for input `partition` in `exception_syncs`, in the order the
    /// partition's engines took them: (the offset of the record it was taken before, the JSON
    /// array). A restored partition takes each again right before that record, as the run that
    /// recorded it did.
    pub async fn exception_syncs(&self, partition: i32) -> Result<Vec<(i64, String)>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Sync {
            source_offset: i64,
            exceptions: String,
        }
        let sql = "SELECT source_offset, exceptions FROM exception_syncs WHERE source_partition = ? \
                   ORDER BY source_offset, written_at";
        let rows: Vec<Sync> = self
            .retrying("exception_syncs", || self.client.query(sql).bind(partition).fetch_all())
            .await?;
        Ok(rows.into_iter().map(|r| (r.source_offset, r.exceptions)).collect())
    }

    /// The output watermarks of input `partition` (see [`Watermarks`]). The
    /// tables hold the output of one input topic.
    pub async fn watermarks(&self, partition: i32) -> Result<Watermarks, SinkError> {
        let mut out = [-1; 2];
        for (i, table) in LINEAGE_TABLES.iter().enumerate() {
            let sql = format!(
                "SELECT count() AS rows, max(source_offset) AS max_offset FROM {table} WHERE source_partition = ?"
            );
            let r: MaxRow = self
                .retrying(table, || self.client.query(&sql).bind(partition).fetch_one())
                .await?;
            out[i] = if r.rows == 0 { -1 } else { r.max_offset };
        }
        Ok(out)
    }
}

/// The durable [`posture_stage::StateStore`] of `posture run`: engine snapshots in ClickHouse.
impl posture_stage::StateStore for SnapshotStore {
    type Error = SinkError;
    async fn load(&self, topic: &str, partition: i32) -> Result<Option<(i64, Vec<u8>)>, SinkError> {
        SnapshotStore::load(self, topic, partition).await
    }
    async fn save(&self, topic: &str, partition: i32, next_offset: i64, bytes: &[u8]) -> Result<(), SinkError> {
        SnapshotStore::save(self, topic, partition, next_offset, bytes).await
    }
}

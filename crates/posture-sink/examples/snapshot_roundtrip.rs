//! Measures how fast engine snapshots go to ClickHouse and back: writes a
//! snapshot of `POSTURE_SNAPSHOT_MB` MB (default 300, about a 1M-device
//! partition) with `SnapshotStore::save` into a fresh database, reads it
//! back with `SnapshotStore::load`, checks the bytes, and prints the times.
//!
//! ```sh
//! scripts/stack up && eval "$(scripts/stack env)"
//! cargo run --release -p posture-sink --example snapshot_roundtrip
//! ```

use posture_sink::{migrate, SnapshotStore};
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("POSTURE_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let mb: usize = std::env::var("POSTURE_SNAPSHOT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let db = format!("snapshot_roundtrip_{}", std::process::id());
    let client = clickhouse::Client::default().with_url(&url).with_validation(false);
    client.query(&format!("CREATE DATABASE {db}")).execute().await?;
    migrate(&client, &db).await?;
    let store = SnapshotStore::new(client.clone().with_database(&db));
    // Bytes that do not compress to nothing, like a real snapshot's leaf bits.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..mb << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8 & 0x3f
        })
        .collect();
    let t = Instant::now();
    store.save("bench", 0, 12345, &bytes).await?;
    let save = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (offset, back) = store.load("bench", 0).await?.ok_or("snapshot not found")?;
    let load = t.elapsed().as_secs_f64();
    assert_eq!(offset, 12345);
    assert!(back == bytes, "the snapshot came back changed");
    println!(
        "snapshot of {mb} MB: save {save:.2} s ({:.0} MB/s), load {load:.2} s ({:.0} MB/s), ClickHouse at {url}",
        mb as f64 / save,
        mb as f64 / load
    );
    client.query(&format!("DROP DATABASE {db}")).execute().await?;
    Ok(())
}

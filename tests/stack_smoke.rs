//! Smoke tests of the test stack itself, with the clients posture uses: rdkafka against Tansu,
//! the official `clickhouse` crate against ClickHouse 18.16. They need `scripts/stack up` and
//! fail (never skip) when it is not running.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_config, unique_name};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

const MESSAGES: usize = 1000;
const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(60);

fn consumer(group: &str) -> StreamConsumer {
    kafka_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("create consumer")
}

/// Produce 1000 keyed messages to a fresh 3-partition topic, consume them all in a group, commit
/// the offsets by hand, then check that a second consumer of the same group starts from the
/// committed offsets: it sees only the messages produced after the commit (one per partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_produce_consume_commit() {
    let start = std::time::Instant::now();
    let topic = fresh_topic_with_partitions("smoke_kafka", PARTITIONS).await;
    let group = unique_name("smoke_group");

    // Progress lines (cargo shows them when the test fails): where it got stuck, and when.
    println!("kafka smoke: created topic ({:?})", start.elapsed());
    let producer: FutureProducer = kafka_config().create().expect("create producer");
    // Enqueue everything, then wait for every delivery report.
    let mut deliveries = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let key = format!("device-{i:04}");
        let payload = format!("payload-{i}");
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueue message {i}: {e}"));
        deliveries.push((key, delivery));
    }
    let mut produced: HashMap<String, (i32, i64)> = HashMap::new();
    for (key, delivery) in deliveries {
        let d = delivery
            .await
            .expect("delivery future canceled")
            .unwrap_or_else(|(e, _)| panic!("deliver {key}: {e}"));
        produced.insert(key, (d.partition, d.offset));
    }
    assert_eq!(produced.len(), MESSAGES);
    let used: std::collections::BTreeSet<i32> = produced.values().map(|(p, _)| *p).collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "keys should spread over all partitions: {used:?}"
    );

    println!("kafka smoke: produced ({:?})", start.elapsed());
    // First consumer: read all 1000, check key -> payload and partition/offset of each.
    let c1 = consumer(&group);
    c1.subscribe(&[&topic]).expect("subscribe");
    let mut seen: HashMap<String, (i32, i64)> = HashMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let consumed = tokio::time::timeout(WAIT, async {
        while seen.len() < MESSAGES {
            let m = c1.recv().await.expect("consume");
            let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key");
            let payload = std::str::from_utf8(m.payload().expect("payload")).expect("utf-8 payload");
            let i: usize = key["device-".len()..].parse().expect("key number");
            assert_eq!(payload, format!("payload-{i}"), "payload of {key}");
            let prev = last_offset.insert(m.partition(), m.offset());
            assert!(
                prev.is_none_or(|p| p < m.offset()),
                "offsets go forward in partition {}",
                m.partition()
            );
            assert!(
                seen.insert(key.clone(), (m.partition(), m.offset())).is_none(),
                "{key} consumed twice"
            );
        }
    })
    .await;
    assert!(
        consumed.is_ok(),
        "consumed only {} of {MESSAGES} messages within {WAIT:?}",
        seen.len()
    );
    assert_eq!(seen, produced, "consumed partition/offset per key = produced");

    println!("kafka smoke: consumed ({:?})", start.elapsed());
    // Manual commit: next offset to read = last consumed + 1, per partition.
    let mut tpl = TopicPartitionList::new();
    for (&partition, &offset) in &last_offset {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
            .expect("tpl");
    }
    c1.commit(&tpl, CommitMode::Sync).expect("commit offsets");
    println!("kafka smoke: committed ({:?})", start.elapsed());
    let committed = c1.committed(Duration::from_secs(10)).expect("read committed offsets");
    for (&partition, &offset) in &last_offset {
        let got = committed.find_partition(&topic, partition).map(|e| e.offset());
        assert_eq!(
            got,
            Some(Offset::Offset(offset + 1)),
            "committed offset of partition {partition}"
        );
    }
    println!("kafka smoke: read committed ({:?})", start.elapsed());
    // The list that committed() returns holds references to the consumer's partitions (and so
    // to its broker): drop it before the consumer, or dropping the consumer (rd_kafka_destroy)
    // waits for it forever.
    drop(committed);
    drop(c1); // closes the consumer: leaves the group

    println!("kafka smoke: dropped c1 ({:?})", start.elapsed());
    // One more message per partition, after the commit.
    for p in 0..PARTITIONS {
        let key = format!("after-commit-{p}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload("x").partition(p),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {key}: {e}"));
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    println!("kafka smoke: produced after-commit ({:?})", start.elapsed());
    // Second consumer in the same group: must resume at the committed offsets, so it sees
    // exactly the after-commit messages and none of the first 1000.
    let c2 = consumer(&group);
    c2.subscribe(&[&topic]).expect("subscribe");
    let mut after = Vec::new();
    let got = tokio::time::timeout(WAIT, async {
        while after.len() < PARTITIONS as usize {
            let m = c2.recv().await.expect("consume");
            let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key");
            assert!(
                key.starts_with("after-commit-"),
                "second consumer got {key} (partition {}, offset {}), committed offsets not honoured",
                m.partition(),
                m.offset()
            );
            assert_eq!(
                m.offset(),
                last_offset[&m.partition()] + 1,
                "first offset read by the second consumer in partition {}",
                m.partition()
            );
            after.push(key);
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "second consumer got {after:?} within {WAIT:?}, expected one after-commit message per partition"
    );
    println!("kafka smoke: second consumer done ({:?})", start.elapsed());
    after.sort();
    let want: Vec<String> = (0..PARTITIONS).map(|p| format!("after-commit-{p}")).collect();
    assert_eq!(after, want);

    // And nothing else turns up.
    let extra = tokio::time::timeout(Duration::from_secs(2), c2.recv()).await;
    if let Ok(m) = extra {
        let m = m.expect("consume");
        panic!(
            "unexpected extra message at partition {} offset {}",
            m.partition(),
            m.offset()
        );
    }
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
struct SmokeRow {
    id: u64,
    device: String,
    score: f64,
}

const ROWS: u64 = 100_000;

/// Create a MergeTree table in a fresh database, insert 100k rows in one INSERT, read back the
/// count, sums and a few rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_insert_and_read_back() {
    let (client, db) = fresh_database("smoke_ch").await;
    client
        .query(
            "CREATE TABLE smoke (id UInt64, device String, score Float64) \
             ENGINE = MergeTree() ORDER BY id",
        )
        .execute()
        .await
        .expect("create table");

    let row = |id: u64| SmokeRow {
        id,
        device: format!("device-{}", id % 1000),
        score: (id % 101) as f64 / 4.0,
    };
    let mut insert = client.insert::<SmokeRow>("smoke").await.expect("insert");
    for id in 0..ROWS {
        insert.write(&row(id)).await.expect("write row");
    }
    insert.end().await.expect("end insert");

    let (count, id_sum, score_sum, devices) = client
        .query("SELECT count(), sum(id), sum(score), uniqExact(device) FROM smoke")
        .fetch_one::<(u64, u64, f64, u64)>()
        .await
        .expect("aggregate");
    assert_eq!(count, ROWS, "rows in {db}.smoke");
    assert_eq!(id_sum, ROWS * (ROWS - 1) / 2, "sum(id)");
    let want_score: f64 = (0..ROWS).map(|id| row(id).score).sum();
    assert!(
        (score_sum - want_score).abs() < 1e-6,
        "sum(score) = {score_sum}, want {want_score}"
    );
    assert_eq!(devices, 1000, "distinct devices");

    let some = client
        .query("SELECT id, device, score FROM smoke WHERE id IN (0, 7, 99999) ORDER BY id")
        .fetch_all::<SmokeRow>()
        .await
        .expect("select rows");
    assert_eq!(some, vec![row(0), row(7), row(99_999)]);
}

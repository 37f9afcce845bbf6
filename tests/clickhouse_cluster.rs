//! posture on a ClickHouse cluster (one shard, a replica per server, ZooKeeper): the schema
//! migrated `ON CLUSTER` with replicated tables, the pipeline's production step writing through
//! one replica with `insert_quorum`, and every read on the other replica exact.
//!
//! Needs the test cluster: `scripts/stack up --cluster` (ZooKeeper and two ClickHouse 18.16
//! servers on loopback), which exports `POSTURE_CLUSTER_URLS` and `POSTURE_CLUSTER_NAME` through
//! `scripts/stack env`.

use posture_core::*;
use posture_query::{Filters, Query, Scope};
use posture_sink::cluster::{everywhere, local_database, shard_key, Layout};
use posture_sink::{migrate_on_cluster, migrations, Sink, SinkStage};
use posture_stage::{PartitionState, Stage, Step, Undecodable};
use posture_tests::consistency::{score_figures, Reference};
use posture_tests::fleet::{fleet_events, BASELINE, T0};
use posture_tests::{check_clickhouse_at, clickhouse_client_at, unique_name, ClusterNode};
use std::sync::Arc;
use std::time::Duration;

async fn tables(client: &clickhouse::Client, db: &str) -> Vec<(String, String)> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct T {
        name: String,
        engine: String,
    }
    client
        .query("SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name")
        .bind(db)
        .fetch_all::<T>()
        .await
        .expect("system.tables")
        .into_iter()
        .map(|t| (t.name, t.engine))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_replicates_and_every_replica_reads_exactly() {
    let (urls, name) = posture_tests::cluster();
    for u in &urls {
        check_clickhouse_at(u).await;
    }
    let nodes: Vec<clickhouse::Client> = urls.iter().map(|u| clickhouse_client_at(u)).collect();
    let db = unique_name("cluster");

    // The schema, through the first node, on every node.
    let (layout, applied) = migrate_on_cluster(&nodes[0], &db, &name)
        .await
        .expect("migrate on the cluster");
    assert_eq!(layout, Layout::Replicated, "cluster {name} has one shard");
    assert_eq!(
        applied.len(),
        migrations().len(),
        "every migration applied: {applied:?}"
    );
    let first = tables(&nodes[0], &db).await;
    for (i, node) in nodes.iter().enumerate() {
        let t = tables(node, &db).await;
        assert_eq!(t, first, "node {} has the tables of node 1", i + 1);
        for (table, engine) in &t {
            assert!(
                engine.starts_with("Replicated") || engine == "View",
                "{table} on node {} is {engine}, not replicated",
                i + 1
            );
        }
    }
    // The same tables as on one server.
    let (single, single_db) = posture_tests::fresh_database("single").await;
    posture_sink::migrate(&single, &single_db)
        .await
        .expect("migrate one server");
    let names = |t: &[(String, String)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&first), names(&tables(&single, &single_db).await));
    // schema_migrations is replicated: the second node knows everything was applied.
    nodes[1]
        .query(&format!("SYSTEM SYNC REPLICA {db}.schema_migrations"))
        .execute()
        .await
        .expect("sync the second replica");
    let (_, again) = migrate_on_cluster(&nodes[1], &db, &name)
        .await
        .expect("migrate again on node 2");
    assert!(again.is_empty(), "nothing to apply twice: {again:?}");

    // The pipeline's step writes through node 1; each INSERT returns once both replicas have it.
    let sink = Sink::new(
        nodes[0]
            .clone()
            .with_database(&db)
            .with_setting("insert_quorum", urls.len().to_string()),
    );
    write_and_read_exactly(&nodes, &db, sink, None).await;
}

/// The pipeline's production step writes 600 events of 40 devices over partitions 0 and 1
/// through `sink` (five flushes, then two flushes of one unusable record each: identical rollup
/// blocks, both real commits), and `score` and `recommendations` read through every node of
/// `nodes` equal the reference engines over everything written. `outage`: a node stopped right
/// before the second flush and started again `outage.1` later, while that flush retries; returns
/// the rows of `transitions` the shards held while it was down.
async fn write_and_read_exactly(
    nodes: &[clickhouse::Client],
    db: &str,
    sink: Sink,
    outage: Option<(&ClusterNode, std::time::Duration, &clickhouse::Client)>,
) -> Option<u64> {
    let cat = Arc::new(Catalog::from_sources(&[("e2e.yaml", BASELINE)]).unwrap());
    let decode = |b: &[u8]| {
        ConfigChange::from_json(std::str::from_utf8(b).map_err(|e| Undecodable::from(e.to_string()))?)
            .map_err(Undecodable::from)
    };
    let mut step = Step::new(SinkStage::new(sink), decode);
    step.stage.topic_partitions(2);
    for p in 0..2 {
        step.stage.prepare_partition(p).await.expect("prepare");
        step.partitions.insert(
            p,
            PartitionState::new(Engine::new(cat.clone(), EngineConfig::default()), 0),
        );
    }
    let events = fleet_events(600, 40);
    let mut during = None;
    let mut next = [0i64; 2];
    let mut records = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let p = (ev.device_id.bytes().map(u32::from).sum::<u32>() % 2) as i32;
        let offset = next[p as usize];
        next[p as usize] += 1;
        step.handle(p, offset, None, ev.to_json().as_bytes()).await;
        records.push((p, offset, Some(ev.clone())));
        if i % 150 == 149 || i == events.len() - 1 {
            for (&partition, ps) in &step.partitions {
                step.stage.settle(partition, &ps.engine);
                step.stage.progress(partition, ps.next_offset, ps.engine.clock());
            }
            match outage {
                Some((node, down_for, shard_one)) if i == 299 => {
                    node.stop();
                    let count = async || {
                        shard_one
                            .query("SELECT count() FROM transitions")
                            .fetch_one::<u64>()
                            .await
                            .expect("count on shard 1")
                    };
                    let before = count().await;
                    let (flushed, held) = tokio::join!(step.stage.flush(), async {
                        tokio::time::sleep(down_for).await;
                        let held = count().await;
                        tokio::task::block_in_place(|| node.start());
                        held - before
                    });
                    flushed.expect("flush through node 1, across the outage");
                    during = Some(held);
                }
                _ => step.stage.flush().await.expect("flush through node 1"),
            }
        }
    }
    // Two flushes of one unusable record each on partition 0: their rollup blocks are identical
    // (the same cut row: offsets +1, clock +0), and both are real commits.
    for _ in 0..2 {
        let offset = next[0];
        next[0] += 1;
        assert!(step.handle(0, offset, None, b"not an event").await.is_some());
        records.push((0, offset, None));
        for (&partition, ps) in &step.partitions {
            step.stage.settle(partition, &ps.engine);
            step.stage.progress(partition, ps.next_offset, ps.engine.clock());
        }
        step.stage.flush().await.expect("flush through node 1");
    }
    assert_eq!(step.stats.applied + step.stats.rejected, events.len() as u64);

    // Every node answers exactly, over everything written (the quorum: no replica lags).
    let reference = Reference::new(cat.clone(), records);
    let end = T0 + 600 * 60_000;
    for (i, node) in nodes.iter().enumerate() {
        let q = Query::new(node.clone().with_database(db), cat.clone());
        for (group, at) in [
            (None, end),
            (None, T0 + 200 * 60_000),
            (Some("servers"), end),
            (Some("finance"), end),
        ] {
            let scope = Scope {
                tenant: "t1".into(),
                group: group.map(str::to_string),
            };
            let got = q.score(&scope, None, at).await.expect("score");
            let cut = got.cut.clone().expect("a cut");
            for pc in &cut.partitions {
                assert_eq!(
                    pc.last_offset,
                    next[pc.partition as usize] - 1,
                    "node {}: partition {} complete",
                    i + 1,
                    pc.partition
                );
            }
            let want = reference.score(&cut, "t1", group, None, at);
            assert_eq!(
                score_figures(&got),
                score_figures(&want),
                "node {}: {group:?} at {at}",
                i + 1
            );
            let (recs, cut) = q
                .recommendations(&scope, Filters::default(), at)
                .await
                .expect("recommendations");
            let want = reference.recommendations(&cut, "t1", group, at);
            assert_eq!(
                recs.iter()
                    .map(|r| (&r.control, r.points_gained, r.misconfigured_devices))
                    .collect::<Vec<_>>(),
                want.iter()
                    .map(|r| (&r.control, r.points_gained, r.misconfigured_devices))
                    .collect::<Vec<_>>(),
                "node {}: recommendations of {group:?} at {at}",
                i + 1
            );
        }
    }
    // The alert's figures: the tenants' latest deltas and a drop's largest causes, the same
    // through every node.
    let mut answers = Vec::new();
    for node in nodes {
        let q = Query::new(node.clone().with_database(db), cat.clone());
        let latest = q.tenants_latest().await.expect("tenants_latest");
        let causes = q
            .drop_causes(&Scope::tenant("t1"), None, T0, end)
            .await
            .expect("drop_causes");
        answers.push(format!("{latest:?} {causes:?}"));
    }
    assert!(answers[0].contains("points_lost"), "a drop with causes: {}", answers[0]);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:#?}");
    during
}

/// The sharded layout (cluster `posture_sharded`: 2 shards x 2 replicas): on every node, each raw
/// table is a replicated local table in `<db>_local` behind a Distributed table of its name, the
/// rollup and small tables are replicated whole, the same names as on one server; migrate through
/// another node applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sharded_schema_is_local_tables_behind_distributed_ones_on_every_node() {
    let (urls, name, replicas) = posture_tests::sharded_cluster();
    for u in &urls {
        check_clickhouse_at(u).await;
    }
    let nodes: Vec<clickhouse::Client> = urls.iter().map(|u| clickhouse_client_at(u)).collect();
    let db = unique_name("sharded");
    let (layout, applied) = migrate_on_cluster(&nodes[0], &db, &name)
        .await
        .expect("migrate on the sharded cluster");
    assert_eq!(layout, Layout::Sharded);
    assert_eq!(applied.len(), migrations().len(), "{applied:?}");
    let local = local_database(&db);
    let (single, single_db) = posture_tests::fresh_database("single").await;
    posture_sink::migrate(&single, &single_db)
        .await
        .expect("migrate one server");
    let single_tables = tables(&single, &single_db).await;
    for (i, node) in nodes.iter().enumerate() {
        let t = tables(node, &db).await;
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = single_tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, want, "node {}: the tables of one server", i + 1);
        let locals = tables(node, &local).await;
        for (table, engine) in &t {
            if engine == "View" {
                continue;
            }
            if everywhere(table) {
                assert!(engine.starts_with("Replicated"), "node {}: {table} is {engine}", i + 1);
            } else {
                assert!(shard_key(table).is_some(), "{table} has a shard key");
                assert_eq!(engine, "Distributed", "node {}: {table}", i + 1);
                assert!(
                    locals.iter().any(|(n, e)| n == table && e.starts_with("Replicated")),
                    "node {}: {local}.{table} is a replicated local table: {locals:?}",
                    i + 1
                );
            }
        }
    }
    nodes[2]
        .query(&format!("SYSTEM SYNC REPLICA {db}.schema_migrations"))
        .execute()
        .await
        .expect("sync node 3");
    let (_, again) = migrate_on_cluster(&nodes[2], &db, &name)
        .await
        .expect("migrate again through node 3");
    assert!(again.is_empty(), "nothing to apply twice: {again:?}");

    // The step writes through node 1 as `posture run` does (synchronous Distributed INSERTs, the
    // quorum of a shard's replicas, every node's for the rollup), partition 0 to shard 1 and 1 to
    // shard 2; the last node (a replica of shard 2) is down for 5 s during a flush: shard 1
    // commits its block, shard 2 fails until the node is back, and the retry sends partition 1's
    // rows alone. Every transition once, every answer exact, on every node.
    let last = ClusterNode::of_stack(urls.len());
    assert_eq!(last.url(), urls[urls.len() - 1]);
    let sink = Sink::new(
        nodes[0]
            .clone()
            .with_database(&db)
            .with_setting("insert_quorum", replicas.to_string())
            .with_setting("insert_distributed_sync", "1")
            // No block deduplication: a resend of rows that had landed would be counted twice,
            // so the test passes only if the per-partition look sends exactly the rest.
            .with_setting("insert_deduplicate", "0"),
    )
    .with_everywhere_quorum(urls.len() as u64)
    .with_retry(posture_stage::RetryPolicy {
        max_attempts: 100,
        max_backoff: Duration::from_secs(1),
        ..Default::default()
    });
    let shard_one = nodes[0].clone().with_database(&local);
    let held = write_and_read_exactly(&nodes, &db, sink, Some((&last, Duration::from_secs(5), &shard_one)))
        .await
        .expect("the outage happened");
    assert!(
        held > 0,
        "shard 1 committed its part of the flush while shard 2 was short of its quorum"
    );
    let (rows, distinct): (u64, u64) = nodes[0]
        .clone()
        .with_database(&db)
        .query("SELECT count(), uniqExact(source_partition, source_offset, seq) FROM transitions")
        .fetch_one()
        .await
        .expect("count transitions");
    assert_eq!(rows, distinct, "no transition twice");
    assert!(rows > 0);

    // Snapshots: a newer one deletes the older from the shard's local tables (a Distributed
    // table takes no ALTER ... DELETE), and the latest is what a restore reads.
    let store = posture_sink::SnapshotStore::new(
        nodes[0]
            .clone()
            .with_database(&db)
            .with_setting("insert_quorum", replicas.to_string())
            .with_setting("insert_distributed_sync", "1"),
    )
    .sharded(&db, &name);
    store.save("snap", 0, 10, b"older").await.expect("save");
    store.save("snap", 0, 20, b"newer").await.expect("save");
    assert_eq!(
        store.load("snap", 0).await.expect("load"),
        Some((20, b"newer".to_vec()))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let older: u64 = nodes[0]
            .clone()
            .with_database(&db)
            .query("SELECT count() FROM engine_snapshots WHERE topic = 'snap' AND next_offset < 20")
            .fetch_one()
            .await
            .expect("count snapshots");
        if older == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the older snapshot is still there after 60 s ({older} rows)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every statement migrate runs on a cluster also parses on ClickHouse 26 (chdb, in-process):
/// `ON CLUSTER`, the replicated engines with their macros, the qualified names. (chdb has no
/// ZooKeeper to create replicated tables in, so the statements are parsed, `EXPLAIN AST`, not run;
/// the cluster test above runs them on 18.16.)
#[test]
fn the_cluster_statements_parse_on_clickhouse_26() {
    use posture_sink::cluster::{on_cluster, ClusterStatement, ClusterTarget};
    let db = "posture";
    let mut statements = vec![(
        "(create database)".to_string(),
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
    )];
    statements.push((
        "000_schema_migrations.sql".into(),
        posture_sink::SCHEMA_MIGRATIONS_DDL.into(),
    ));
    for m in migrations() {
        statements.extend(m.statements().into_iter().map(|s| (m.name.to_string(), s)));
    }
    let mut rewritten: Vec<(String, String)> = Vec::new();
    for layout in [Layout::Replicated, Layout::Sharded] {
        let to = ClusterTarget {
            database: db,
            cluster: "posture",
            layout,
        };
        for (file, s) in &statements {
            for c in on_cluster(s, file, &to).unwrap_or_else(|e| panic!("{e}")) {
                let (ClusterStatement::EveryNode(s) | ClusterStatement::Once(s)) = c;
                rewritten.push((file.clone(), s));
            }
        }
    }
    let queries: Vec<String> = rewritten.iter().map(|(_, s)| format!("EXPLAIN AST {s}")).collect();
    let (version, answers) = posture_tests::run_chdb(&[], &queries);
    assert!(version.starts_with("26."), "chdb is ClickHouse {version}");
    for ((file, s), answer) in rewritten.iter().zip(&answers) {
        assert!(
            answer.contains("Create")
                || answer.contains("Alter")
                || answer.contains("Rename")
                || answer.contains("Drop")
                || answer.contains("Insert"),
            "{file}: {s}: {answer}"
        );
    }
    let distributed = answers.iter().filter(|a| a.contains("Distributed")).count();
    assert!(
        distributed >= 10,
        "the sharded layout's Distributed tables: {distributed}"
    );
    let replicated = answers
        .iter()
        .filter(|a| a.contains("ReplicatedMergeTree") || a.contains("Replicated"))
        .count();
    assert!(
        replicated >= 10,
        "the tables' engines are replicated: {replicated} statements name one"
    );
}

//! The evaluator under criterion: Avro record bytes -> decode -> evaluate ->
//! emit (the score-delta records), on one core, on a fleet populated with a
//! 300-setting SNAPSHOT per device. `thrpt` is events/s.
//!
//! Run: `cargo bench -p posture-bench --bench evaluator`
//! (`POSTURE_BENCH_DEVICES=1000000` for the 1M-device fleet; the harness,
//! `posture-bench`, gives the same figure in its table.)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use posture_bench::{evaluator, fleet};
use posture_core::SourcePos;
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let devices: usize = std::env::var("POSTURE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let catalog = Arc::new(fleet::catalog());
    let (engine, _) = evaluator::populate(&catalog, devices, &|_| {});
    let records = fleet::encode(&fleet::upserts(devices, 50_000, 5, 2));
    let mut g = c.benchmark_group(format!("evaluator_{devices}_devices_300_controls"));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(records.len() as u64));
    let mut pass = 0i64;
    let mut run = |ev: &mut evaluator::Evaluator, iters: u64| {
        let t = std::time::Instant::now();
        for _ in 0..iters {
            // Every pass feeds the records as new events (sequence numbers moved on).
            pass += 1;
            for (i, r) in records.iter().enumerate() {
                let pos = SourcePos {
                    partition: 0,
                    offset: i as i64,
                };
                std::hint::black_box(ev.step(r, pos, pass * 1_000_000_000));
            }
        }
        t.elapsed()
    };
    let mut ev = evaluator::Evaluator::new(engine, false);
    g.bench_function("decode_evaluate_emit_5_settings", |b| {
        b.iter_custom(|n| run(&mut ev, n))
    });
    let mut ev = evaluator::Evaluator::new(ev.into_engine(), true);
    g.bench_function("with_clickhouse_rows_5_settings", |b| {
        b.iter_custom(|n| run(&mut ev, n))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

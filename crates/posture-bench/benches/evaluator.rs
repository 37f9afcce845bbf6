//! The evaluator under criterion: Avro record bytes -> the pipeline's step (decode -> evaluate
//! -> emit the score-delta records, and with rows posture-sink's rows), on one core, on a fleet populated with a
//! 300-setting SNAPSHOT per device, fed fresh drift (5 settings per event).
//! `thrpt` is events/s.
//!
//! Run: `cargo bench -p posture-bench --bench evaluator`
//! (`POSTURE_BENCH_DEVICES=1000000` for the 1M-device fleet; the harness,
//! `posture-bench`, gives the same figure in its table.)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use posture_bench::{evaluator, fleet};
use std::time::Duration;

/// The allocator of posture's binaries, so the figure is theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let devices: usize = std::env::var("POSTURE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut fleet = fleet::BenchFleet::new(devices, 5, 2);
    let (engine, _) = evaluator::populate(&mut fleet, &|_| {});
    // One iteration is a batch of this many fresh drift events: generated and encoded before
    // the timer starts (the same records again would mostly change nothing).
    const BATCH: usize = 2_000;
    let mut g = c.benchmark_group(format!("evaluator_{devices}_devices_300_controls"));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut offset = 0i64;
    let mut run = |ev: &mut evaluator::Evaluator, iters: u64| {
        let records = fleet::encode(&fleet.drift(BATCH * iters as usize));
        let t = std::time::Instant::now();
        let applied = ev.run(std::hint::black_box(&records), offset);
        let elapsed = t.elapsed();
        offset += records.len() as i64;
        assert_eq!(applied, records.len(), "the engine refused drift events");
        elapsed
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

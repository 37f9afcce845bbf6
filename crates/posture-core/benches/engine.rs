//! Benchmarks of the scoring core: events/s applying events to a fleet with a
//! 300-control baseline (evaluate + emit; JSON parsing excluded), and the
//! state bytes per device measured with a counting allocator.
//!
//! Run: `cargo bench -p posture-core --bench engine`
//! (`POSTURE_BENCH_DEVICES=1000000` for the 1M-device variant.)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use posture_core::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Counts live heap bytes, so state size is measured, not estimated.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const CONTROLS: usize = 300;
const T0: i64 = 1_795_341_600_000;

/// 300 controls: 200 single boolean leaves, 50 `all` of two numeric leaves,
/// 50 dotted-version minimums; all five categories; 20 groups.
fn baseline() -> String {
    let cats = ["application", "os", "network", "accounts", "security_controls"];
    let mut s = String::from("baseline: bench\nversion: 1\ncontrols:\n");
    for i in 0..CONTROLS {
        let cat = cats[i % 5];
        let check = if i < 200 {
            format!("{{ key: k{i}, op: eq, value: true }}")
        } else if i < 250 {
            format!(
                "{{ all: [ {{ key: k{i}, op: ge, value: 10 }}, {{ key: k{}, op: lt, value: 100 }} ] }}",
                (i + 1) % CONTROLS
            )
        } else {
            format!("{{ key: k{i}, op: ge, value: \"10.0.19045\", version: true }}")
        };
        s += &format!("  - {{ id: c{i}, title: C{i}, category: {cat}, on_missing: fail, check: {check} }}\n");
    }
    s
}

fn value(i: usize, good: bool) -> Value {
    if i < 200 {
        Value::Bool(good)
    } else if i < 250 {
        Value::Long(if good { 50 } else { 5 })
    } else {
        Value::String(if good { "10.0.22631".into() } else { "10.0.17763".into() })
    }
}

/// Populates `n` devices with a SNAPSHOT each (all 300 settings, ~80% good).
fn populate(cat: &Arc<Catalog>, n: usize) -> (Engine, isize) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut engine = Engine::new(cat.clone(), EngineConfig::default());
    let mut out = Output::default();
    let mut ev = ConfigChange {
        event_id: "snap".into(),
        tenant_id: "t1".into(),
        device_id: String::new(),
        observed_at: T0,
        sequence: 1,
        source: ConfigSource::Agent,
        kind: ChangeKind::Snapshot,
        device: None,
        settings: (0..CONTROLS)
            .map(|i| Setting {
                key: format!("k{i}"),
                value: Value::Null,
            })
            .collect(),
    };
    let mut rng = fastrand::Rng::with_seed(1);
    let infos: Vec<DeviceInfo> = (0..20)
        .map(|g| DeviceInfo {
            os_family: "windows".into(),
            os_version: "10.0.22631".into(),
            hostname: None,
            groups: vec![format!("group-{g}")],
            tags: vec![],
        })
        .collect();
    for d in 0..n {
        ev.device_id = format!("device-{d:08}");
        ev.device = Some(infos[d % 20].clone());
        for (i, s) in ev.settings.iter_mut().enumerate() {
            s.value = value(i, rng.f64() < 0.8);
        }
        engine.apply(&ev, SourcePos::default(), &mut out).unwrap();
        out.clear();
    }
    drop(out);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    (engine, bytes)
}

/// UPSERT events flipping `k` random settings each, on random devices.
fn upserts(n_devices: usize, count: usize, k: usize) -> Vec<ConfigChange> {
    let mut rng = fastrand::Rng::with_seed(2);
    (0..count)
        .map(|j| ConfigChange {
            event_id: format!("u{j}"),
            tenant_id: "t1".into(),
            device_id: format!("device-{:08}", rng.usize(..n_devices)),
            observed_at: T0 + 1000 + j as i64,
            sequence: 0,
            source: ConfigSource::Agent,
            kind: ChangeKind::Upsert,
            device: None,
            settings: (0..k)
                .map(|_| {
                    let i = rng.usize(..CONTROLS);
                    Setting {
                        key: format!("k{i}"),
                        value: value(i, rng.bool()),
                    }
                })
                .fold(Vec::new(), |mut v: Vec<Setting>, s| {
                    if !v.iter().any(|x| x.key == s.key) {
                        v.push(s);
                    }
                    v
                }),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("POSTURE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let cat = Arc::new(Catalog::from_sources(&[("bench.yaml", baseline())]).expect("bench baseline"));
    let start = std::time::Instant::now();
    let (mut engine, bytes) = populate(&cat, n);
    eprintln!(
        "\nstate: {n} devices, {} controls, {} leaves: {:.0} bytes/device measured by the allocator (all engine memory / devices), {:.0} bytes/device by layout; populated with {n} 300-setting SNAPSHOTs in {:.2} s ({:.0} snapshots/s)",
        cat.controls.len(),
        cat.leaves.len(),
        bytes as f64 / n as f64,
        engine.state_bytes_per_device(),
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );

    // Snapshot and restore (the durable state of a partition), best of 3.
    let mut snap = Vec::new();
    let (mut t_snap, mut t_restore) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        snap.clear();
        let t = std::time::Instant::now();
        engine.snapshot(&mut snap);
        t_snap = t_snap.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let restored = Engine::restore(cat.clone(), EngineConfig::default(), &snap).expect("restore");
        t_restore = t_restore.min(t.elapsed().as_secs_f64());
        black_box(restored.device_count());
    }
    eprintln!(
        "snapshot: {n} devices -> {:.1} MB ({:.0} bytes/device) in {:.3} s; restore in {:.3} s ({:.2} M devices/s)",
        snap.len() as f64 / 1e6,
        snap.len() as f64 / n as f64,
        t_snap,
        t_restore,
        n as f64 / t_restore / 1e6
    );
    drop(snap);

    let mut seq = 1i64;
    let mut out = Output::default();
    let mut g = c.benchmark_group(format!("engine_{n}_devices_300_controls"));
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(8));
    let mut rng = fastrand::Rng::with_seed(3);
    for k in [1usize, 5] {
        let mut events = upserts(n, 50_000, k);
        g.throughput(Throughput::Elements(events.len() as u64));
        g.bench_function(format!("upsert_{k}_settings"), |b| {
            b.iter_custom(|iters| {
                let mut took = std::time::Duration::ZERO;
                for _ in 0..iters {
                    // Fresh values before every pass (untimed): the same values again would
                    // mostly be what the devices already hold, and change nothing.
                    for ev in events.iter_mut() {
                        for s in &mut ev.settings {
                            let i: usize = s.key[1..].parse().expect("k<i>");
                            s.value = value(i, rng.bool());
                        }
                    }
                    let t = std::time::Instant::now();
                    for ev in events.iter_mut() {
                        // a globally increasing sequence keeps every pass fresh
                        seq += 1;
                        ev.sequence = seq;
                        let r = engine.apply(ev, SourcePos::default(), &mut out);
                        black_box(r.is_ok());
                        if out.transitions.len() > 8192 {
                            out.clear();
                        }
                    }
                    out.clear();
                    took += t.elapsed();
                }
                took
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

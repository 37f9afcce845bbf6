//! The evaluator alone, on one core: Kafka record bytes in, score deltas out,
//! nothing between them but the production code of each stage.
//!
//! ```text
//! Avro bytes ─► WireDecoder::decode ─► Engine::apply ─► encode_engine_delta_into (the score-delta record)
//!                                                   └─► (with rows) rows + evidence_row: the ClickHouse rows
//! ```
//!
//! Also the state figures: bytes per device (counted by the caller's
//! allocator), and snapshot and restore times of the whole fleet.

use crate::fleet;
use posture_avro::WireDecoder;
use posture_core::{Catalog, ConfigChange, Engine, EngineConfig, Output, SourcePos};
use posture_sink::Batch;
use std::sync::Arc;
use std::time::Instant;

/// What the ClickHouse stage would be given, cleared every this many rows
/// (a batch of `posture run`'s default size, `--batch-rows`).
const BATCH_ROWS: usize = 100_000;

/// One engine with the stages around it, as `posture run` has per partition.
pub struct Evaluator {
    decoder: WireDecoder,
    /// The event every record is decoded into (its buffers reused).
    ev: ConfigChange,
    engine: Engine,
    out: Output,
    payload: Vec<u8>,
    rows: Option<Batch>,
    /// Clear the rows every this many (as the ClickHouse stage's flush would).
    clear_rows_at: usize,
    /// Transitions emitted so far.
    pub transitions: u64,
    /// Score-delta bytes encoded so far.
    pub emitted_bytes: u64,
}

impl Evaluator {
    /// Wraps a populated engine. With `rows`, every event is also turned
    /// into the rows `posture run` writes to ClickHouse (transitions, control
    /// state, score deltas, settings evidence, inventory).
    pub fn new(engine: Engine, rows: bool) -> Evaluator {
        Evaluator {
            decoder: WireDecoder::new(None),
            ev: fleet::empty_event(),
            engine,
            out: Output::default(),
            payload: Vec::with_capacity(4096),
            rows: rows.then(Batch::new),
            clear_rows_at: BATCH_ROWS,
            transitions: 0,
            emitted_bytes: 0,
        }
    }

    /// Decodes, applies and emits one record. Returns whether the engine
    /// applied the event.
    pub fn step(&mut self, record: &[u8], pos: SourcePos) -> bool {
        let ev = &mut self.ev;
        if self.decoder.decode_into(record, ev).is_err() {
            return false;
        }
        if self.engine.apply(ev, pos, &mut self.out).is_err() {
            return false;
        }
        if let Some(batch) = &mut self.rows {
            let cat = self.engine.catalog();
            posture_sink::evidence_row(ev, pos, |k| cat.key_idx(k).is_some(), batch);
            posture_sink::inventory_row(ev, pos, batch);
            posture_sink::rows(&self.engine, &self.out, batch);
            if batch.len() >= self.clear_rows_at {
                // As the ClickHouse stage's flush: the changed devices' rows made, then written.
                batch.settle(&self.engine, None);
                batch.clear();
            }
        }
        for t in &self.out.transitions {
            self.payload.clear();
            posture_avro::encode_engine_delta_into(&self.engine, t, self.out.deltas_of(t), 2, &mut self.payload);
            self.emitted_bytes += self.payload.len() as u64;
        }
        self.transitions += self.out.transitions.len() as u64;
        self.out.clear();
        true
    }

    /// Makes the `device_state` rows of the devices changed since the last flush, as the
    /// ClickHouse stage does right before a flush ([`Batch::settle`]).
    pub fn settle_rows(&mut self) {
        if let Some(batch) = &mut self.rows {
            batch.settle(&self.engine, None);
        }
    }

    /// Keeps every row (for writing them afterwards: [`Evaluator::take_rows`]).
    pub fn keep_rows(mut self) -> Evaluator {
        self.clear_rows_at = usize::MAX;
        self
    }

    /// The rows made so far.
    pub fn take_rows(&mut self) -> Batch {
        if let Some(batch) = &mut self.rows {
            batch.settle(&self.engine, None);
        }
        self.rows.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Gives the engine back.
    pub fn into_engine(self) -> Engine {
        self.engine
    }
}

/// Applies a SNAPSHOT of every device (without decoding: populating is not
/// what is measured). Returns the engine and the seconds it took.
pub fn populate(catalog: &Arc<Catalog>, devices: usize, progress: &dyn Fn(usize)) -> (Engine, f64) {
    let started = Instant::now();
    let mut engine = Engine::new(catalog.clone(), EngineConfig::default());
    let mut out = Output::default();
    let mut ev = fleet::empty_event();
    let mut rng = fastrand::Rng::with_seed(1);
    for d in 0..devices {
        fleet::snapshot_into(&mut ev, d, &mut rng);
        engine
            .apply(&ev, SourcePos::default(), &mut out)
            .expect("a synthetic snapshot applies");
        out.clear();
        if d % 100_000 == 99_999 {
            progress(d + 1);
        }
    }
    (engine, started.elapsed().as_secs_f64())
}

/// The figures of one fleet size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figures {
    /// Devices in the fleet.
    pub devices: usize,
    /// Controls of the baseline (300 for [`fleet::catalog`]).
    pub controls: usize,
    /// Seconds to populate the fleet with one 300-setting SNAPSHOT each.
    pub populate_secs: f64,
    /// Live heap bytes the engine holds, per device (the caller's allocator).
    pub state_bytes_per_device: f64,
    /// The engine's own estimate from its layout.
    pub layout_bytes_per_device: f64,
    /// Size of the whole fleet's engine snapshot, bytes.
    pub snapshot_bytes: usize,
    /// Seconds to write that snapshot (once, not best of `passes`).
    pub snapshot_secs: f64,
    /// Restoring the whole fleet from its snapshot (best of `passes`).
    pub restore_secs: f64,
    /// Drift events measured.
    pub events: usize,
    /// Settings each drift event sets.
    pub settings_per_event: usize,
    /// Transitions per event, pass by pass (every pass is fresh drift, so
    /// these should be alike).
    pub transitions_per_event: Vec<f64>,
    /// decode + evaluate + emit (score-delta records), events/s, best of `passes`.
    pub events_per_sec: f64,
    /// The same, plus the ClickHouse rows `posture run` makes.
    pub events_per_sec_with_rows: f64,
}

/// How to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Devices in the fleet, populated with one 300-setting SNAPSHOT each before anything is timed.
    pub devices: usize,
    /// Drift events per timed pass: fresh ones every pass, generated and encoded before it.
    pub events: usize,
    /// Settings each drift event sets (5 in the published figures).
    pub settings_per_event: usize,
    /// Repetitions of the timed parts; the best is kept (the least disturbed).
    pub passes: usize,
}

/// Measures one fleet size. `live_bytes(on)` switches the process's
/// counting allocator on or off and reads its live heap bytes; it counts
/// only while the fleet is populated. `say` reports progress.
pub fn measure(plan: Plan, live_bytes: &dyn Fn(bool) -> isize, say: &dyn Fn(String)) -> Figures {
    let catalog = Arc::new(fleet::catalog());
    say(format!(
        "evaluator: populating {} devices x {} controls",
        plan.devices,
        catalog.controls.len()
    ));
    let before = live_bytes(true);
    let (engine, populate_secs) = populate(&catalog, plan.devices, &|n| say(format!("  {n} devices")));
    let state = (live_bytes(false) - before) as f64 / plan.devices as f64;
    let layout = engine.state_bytes_per_device();

    say("evaluator: snapshot and restore".into());
    let mut snap = Vec::new();
    let t = Instant::now();
    engine.snapshot(&mut snap);
    let snapshot_secs = t.elapsed().as_secs_f64();
    let mut restore_secs = f64::MAX;
    for _ in 0..plan.passes.max(1) {
        let t = Instant::now();
        let restored = Engine::restore(catalog.clone(), EngineConfig::default(), &snap).expect("own snapshot restores");
        restore_secs = restore_secs.min(t.elapsed().as_secs_f64());
        assert_eq!(restored.device_count(), plan.devices, "restore lost devices");
    }
    let snapshot_bytes = snap.len();
    drop(snap);

    // Every pass gets fresh drift (the same records again would mostly set values the devices
    // already hold, and change nothing): generated and encoded before the pass is timed.
    let mut drift = fleet::Drift::new(plan.devices, plan.settings_per_event, 2);
    let mut ev = Evaluator::new(engine, false);
    let mut best = [f64::MAX; 2];
    let mut transitions_per_event = Vec::new();
    let mut offset = 0i64;
    for with_rows in [false, true] {
        ev.rows = with_rows.then(Batch::new);
        for _ in 0..plan.passes.max(1) {
            let records = fleet::encode(&drift.take(plan.events));
            let t0 = ev.transitions;
            let mut applied = 0usize;
            let t = Instant::now();
            for r in &records {
                let pos = SourcePos { partition: 0, offset };
                offset += 1;
                applied += ev.step(r, pos) as usize;
            }
            // The pass's own state rows, as the flush at its end would make them.
            ev.settle_rows();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(applied, records.len(), "the engine refused drift events");
            best[with_rows as usize] = best[with_rows as usize].min(secs);
            transitions_per_event.push((ev.transitions - t0) as f64 / records.len() as f64);
        }
        say(format!(
            "  {}: {:.0} events/s (best of {}; transitions per event by pass: {})",
            if with_rows {
                "with ClickHouse rows"
            } else {
                "decode + evaluate + emit"
            },
            plan.events as f64 / best[with_rows as usize],
            plan.passes.max(1),
            transitions_per_event
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Figures {
        devices: plan.devices,
        controls: catalog.controls.len(),
        populate_secs,
        state_bytes_per_device: state,
        layout_bytes_per_device: layout,
        snapshot_bytes,
        snapshot_secs,
        restore_secs,
        events: plan.events,
        settings_per_event: plan.settings_per_event,
        transitions_per_event,
        events_per_sec: plan.events as f64 / best[0],
        events_per_sec_with_rows: plan.events as f64 / best[1],
    }
}

//! The evaluator alone, on one core: Kafka record bytes in, score deltas out, through the
//! pipeline's own per-record step ([`Step::handle`], the one `posture run` drives from Kafka)
//! and its own stages; only Kafka itself is left out (records come from memory, score deltas
//! are encoded but not produced).
//!
//! ```text
//! Avro bytes ─► Step::handle ─► AvroDecoder ─► Engine::apply ─► EncodeDeltas (the score-delta records,
//!                                                            │                as the Kafka stage encodes them)
//!                                                            └─► RowStage (with rows: posture-sink's rows;
//!                                                                 its flush makes the rollup rows and drops all)
//! ```
//!
//! Also the state figures: bytes per device (counted by the caller's
//! allocator), and snapshot and restore times of the whole fleet.

use crate::fleet;
use posture_avro::AvroDecoder;
use posture_core::{Engine, EngineConfig, Output, SourcePos};
use posture_sink::{Batch, RowStage};
use posture_stage::{PartitionState, Stage, Step};
use std::convert::Infallible;
use std::time::Instant;

/// Rows held before the stages are flushed (`posture run`'s default `--batch-rows`).
const BATCH_ROWS: usize = 100_000;

/// The input partition the evaluator's engine serves.
const PARTITION: i32 = 0;

/// The score-delta records of the output topic, encoded as the Kafka stage encodes them
/// ([`posture_avro::encode_engine_delta_into`] per transition); producing them is what is
/// left out.
#[derive(Default)]
pub struct EncodeDeltas {
    payload: Vec<u8>,
    /// Transitions emitted so far.
    pub transitions: u64,
    /// Score-delta bytes encoded so far.
    pub bytes: u64,
}

impl Stage for EncodeDeltas {
    type Error = Infallible;
    fn absorb(&mut self, engine: &Engine, out: &Output) {
        for t in &out.transitions {
            self.payload.clear();
            posture_avro::encode_engine_delta_into(engine, t, out.deltas_of(t), 2, &mut self.payload);
            self.bytes += self.payload.len() as u64;
        }
        self.transitions += out.transitions.len() as u64;
    }
    fn pending_rows(&self) -> usize {
        0
    }
    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// One engine in the production step with the stages around it, as `posture run` has per
/// partition.
pub struct Evaluator {
    step: Step<(EncodeDeltas, Option<RowStage>), AvroDecoder>,
    /// Drives the step for the blocking [`Evaluator::run`] (its futures never wait: nothing in
    /// it does I/O here); made on first use, so an evaluator used only from async code through
    /// [`Evaluator::run_async`] has none (a runtime must not be dropped inside another).
    rt: Option<tokio::runtime::Runtime>,
    /// Flush the stages at this many pending rows (as the ingest loop does).
    flush_at: usize,
}

impl Evaluator {
    /// Wraps a populated engine, whose next record is at offset 0. With `rows`, every event is
    /// also turned into the rows `posture run` writes to ClickHouse ([`RowStage`]).
    pub fn new(engine: Engine, rows: bool) -> Evaluator {
        let mut step = Step::new(
            (EncodeDeltas::default(), rows.then(RowStage::new)),
            AvroDecoder::new(None, None),
        );
        step.stage.topic_partitions(1);
        step.partitions.insert(PARTITION, PartitionState::new(engine, 0));
        Evaluator {
            step,
            rt: None,
            flush_at: BATCH_ROWS,
        }
    }

    /// Hands `records` to the step as the records at offsets `first_offset..` (at or after
    /// every offset already handed), flushing the stages whenever `--batch-rows` rows are
    /// pending, as the ingest loop does. Returns how many events the engine applied.
    pub fn run(&mut self, records: &[Vec<u8>], first_offset: i64) -> usize {
        let rt = self.rt.get_or_insert_with(runtime);
        rt.block_on(feed(&mut self.step, self.flush_at, records, first_offset))
    }

    /// [`Evaluator::run`] from async code.
    pub async fn run_async(&mut self, records: &[Vec<u8>], first_offset: i64) -> usize {
        feed(&mut self.step, self.flush_at, records, first_offset).await
    }

    /// Flushes the stages as the ingest loop does before it writes: the device rows of the
    /// partition made ([`Stage::settle`]), its progress told, then the flush (with rows: the
    /// rollup rows made, and everything dropped).
    pub fn flush(&mut self) {
        let rt = self.rt.get_or_insert_with(runtime);
        rt.block_on(flush(&mut self.step));
    }

    /// Transitions emitted so far.
    pub fn transitions(&self) -> u64 {
        self.step.stage.0.transitions
    }

    /// Score-delta bytes encoded so far.
    pub fn emitted_bytes(&self) -> u64 {
        self.step.stage.0.bytes
    }

    /// Switches the rows on or off (off: whatever was made is dropped).
    pub fn set_rows(&mut self, rows: bool) {
        self.step.stage.1 = rows.then(RowStage::new);
    }

    /// Keeps every row (for writing them afterwards: [`Evaluator::take_rows`]).
    pub fn keep_rows(mut self) -> Evaluator {
        self.flush_at = usize::MAX;
        self
    }

    /// The rows made since the last flush, the device rows of the changed devices made first.
    pub fn take_rows(&mut self) -> Batch {
        let engine = &self.step.partitions[&PARTITION].engine;
        match &mut self.step.stage.1 {
            Some(rows) => {
                rows.settle(PARTITION, engine);
                rows.take()
            }
            None => Batch::default(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.step.partitions[&PARTITION].engine
    }

    /// Gives the engine back.
    pub fn into_engine(mut self) -> Engine {
        self.step.partitions.remove(&PARTITION).expect("the partition").engine
    }
}

/// The runtime of the blocking calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// Hands `records` to `step` from `first_offset` on, flushing at `flush_at` pending rows; returns
/// how many events were applied.
async fn feed(
    step: &mut Step<(EncodeDeltas, Option<RowStage>), AvroDecoder>,
    flush_at: usize,
    records: &[Vec<u8>],
    first_offset: i64,
) -> usize {
    let before = step.stats.applied;
    for (i, r) in records.iter().enumerate() {
        step.handle(PARTITION, first_offset + i as i64, None, r).await;
        if step.stage.pending_rows() >= flush_at {
            flush(step).await;
        }
    }
    (step.stats.applied - before) as usize
}

/// The ingest loop's flush, without the write's I/O (see [`Evaluator::flush`]).
async fn flush(step: &mut Step<(EncodeDeltas, Option<RowStage>), AvroDecoder>) {
    for (&partition, p) in &step.partitions {
        step.stage.settle(partition, &p.engine);
        step.stage.progress(partition, p.next_offset, p.engine.clock());
    }
    step.stage.flush().await.expect("the stages write nothing");
}

/// Applies a SNAPSHOT of every device of `fleet` (without decoding: populating is not what is
/// measured). Returns the engine and the seconds it took.
pub fn populate(fleet: &mut fleet::BenchFleet, progress: &dyn Fn(usize)) -> (Engine, f64) {
    let started = Instant::now();
    let mut engine = Engine::new(fleet.catalog.clone(), EngineConfig::default());
    let mut out = Output::default();
    let mut ev = fleet::empty_event();
    for d in 0..fleet.devices() {
        fleet.snapshot_into(d, &mut ev);
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
    let mut fleet = fleet::BenchFleet::new(plan.devices, plan.settings_per_event, 2);
    let catalog = fleet.catalog.clone();
    say(format!(
        "evaluator: populating {} devices x {} controls",
        plan.devices,
        catalog.controls.len()
    ));
    let before = live_bytes(true);
    let (engine, populate_secs) = populate(&mut fleet, &|n| say(format!("  {n} devices")));
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
    let mut ev = Evaluator::new(engine, false);
    let mut best = [f64::MAX; 2];
    let mut transitions_per_event = Vec::new();
    let mut offset = 0i64;
    for with_rows in [false, true] {
        ev.set_rows(with_rows);
        for _ in 0..plan.passes.max(1) {
            let records = fleet::encode(&fleet.drift(plan.events));
            let t0 = ev.transitions();
            let t = Instant::now();
            let applied = ev.run(&records, offset);
            // The pass's own rows made and dropped, as the flush at its end would.
            ev.flush();
            let secs = t.elapsed().as_secs_f64();
            offset += records.len() as i64;
            assert_eq!(applied, records.len(), "the engine refused drift events");
            best[with_rows as usize] = best[with_rows as usize].min(secs);
            transitions_per_event.push((ev.transitions() - t0) as f64 / records.len() as f64);
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

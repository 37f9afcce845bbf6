//! The production wiring of the ingest loop: Avro wire-format decoding and a
//! [`Stage`] that writes rows to ClickHouse through [`posture_sink::Sink`].

use crate::Stage;
use posture_avro::WireDecoder;
use posture_core::{ConfigChange, Engine, Output};
use posture_sink::{rows, Batch, Sink, SinkError};

/// Rows go to a [`Batch`]; a flush writes it with the sink's retries.
pub struct SinkStage {
    sink: Sink,
    batch: Batch,
}

impl SinkStage {
    /// A stage writing through `sink`.
    pub fn new(sink: Sink) -> SinkStage {
        SinkStage {
            sink,
            batch: Batch::new(),
        }
    }
}

impl Stage for SinkStage {
    type Error = SinkError;

    fn absorb(&mut self, engine: &Engine, out: &Output) {
        rows(engine, out, &mut self.batch);
    }

    fn pending_rows(&self) -> usize {
        self.batch.len()
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        // `write` removes each table from the batch once it is written, so a
        // failed flush resends only what is left.
        self.sink.write(&mut self.batch).await
    }
}

/// A decoder of Confluent-framed Avro `ConfigChange` records; `schema_ids`
/// limits the accepted schema ids (`None`: any). Errors read `reason: detail`.
pub fn avro_decoder(schema_ids: Option<Vec<u32>>) -> impl FnMut(&[u8]) -> Result<ConfigChange, String> {
    let decoder = WireDecoder::new(schema_ids);
    move |bytes| decoder.decode(bytes).map_err(|e| format!("{}: {e}", e.reason()))
}

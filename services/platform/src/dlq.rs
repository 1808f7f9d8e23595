//! Dead letters: an event that cannot be decoded or validated is written to
//! the DLQ with its raw bytes and a reason, and the pipeline goes on.

use crate::trace::TraceContext;
use orelink_codec::{Codec, EncodeError, Refusal, SourceRef};
use orelink_domain::Millis;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("encoding the dead letter: {0}")]
    Encode(#[from] EncodeError),
    #[error("producing the dead letter: {0}")]
    Produce(rdkafka::error::KafkaError),
}

impl DeadLetterError {
    pub fn retriable(&self) -> bool {
        match self {
            DeadLetterError::Encode(e) => e.retriable(),
            // The idempotent producer already retried within message.timeout.ms; trying again is safe.
            DeadLetterError::Produce(_) => true,
        }
    }
}

pub fn now_millis() -> Millis {
    Millis(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    codec: Arc<Codec>,
    role: String,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, codec: Arc<Codec>, role: &str) -> Self {
        DeadLetters { producer, codec, role: role.to_owned() }
    }

    /// The role that writes these dead letters.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Writes one dead letter and returns once Kafka has it.
    pub async fn send(&self, source: &SourceRef<'_>, refusal: &Refusal, trace: &TraceContext) -> Result<(), DeadLetterError> {
        let letter = Codec::dead_letter(source, refusal, now_millis(), &self.role);
        let dlq = self.codec.dlq_topic();
        let bytes = self.codec.encode(&dlq, &letter).await?;
        let record = FutureRecord::to(&dlq).key(source.topic).payload(&bytes).headers(trace.to_headers());
        self.producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| DeadLetterError::Produce(e))?;
        tracing::warn!(source_topic = source.topic, partition = source.partition, offset = source.offset, class = refusal.class.as_str(), reason = %refusal.reason, "dead-lettered");
        Ok(())
    }
}

//! How exactly-once roles treat Kafka transaction errors (after rust-rdkafka's
//! transaction tests): retry the same call, abort and rewind, or stop.

use rdkafka::error::KafkaError;

/// What to do about a transactional error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    /// Try the same call again.
    Retriable,
    /// Abort the transaction and rewind the input to the committed offsets.
    Abort,
    /// The producer is unusable (fenced, misconfigured): stop; a restart resumes.
    Fatal,
}

pub fn classify(e: &KafkaError) -> TxnError {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => TxnError::Fatal,
        KafkaError::Transaction(t) if t.txn_requires_abort() => TxnError::Abort,
        KafkaError::Transaction(t) if t.is_retriable() => TxnError::Retriable,
        _ => TxnError::Abort,
    }
}

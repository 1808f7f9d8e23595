//! The pieces under the exactly-once loop (`txn_loop`): how Kafka transaction
//! errors are treated (after rust-rdkafka's transaction tests: retry the same
//! call, abort and rewind, or stop), the flush and the commit, the rewind
//! after an abort, and a send that waits while the producer's queue is full.

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use std::time::Duration;

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

/// Whether `e` says this producer was fenced: its epoch was bumped by the
/// coordinator (which does so when it aborts a transaction that outlived
/// `transaction.timeout.ms`) or by a newer producer with the same
/// transactional id.
pub fn fenced(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{Fenced, InvalidProducerEpoch, ProducerFenced};
    matches!(e.rdkafka_error_code(), Some(Fenced | ProducerFenced | InvalidProducerEpoch))
}

/// Waits until everything produced so far is delivered (or has failed), on
/// librdkafka's own condition variable. For a `ThreadedProducer`, whose thread
/// serves the delivery reports: rust-rdkafka's `flush` (which its
/// `commit_transaction` calls first) polls in 100 ms steps instead, which put
/// 100 ms on every transaction.
pub fn flush<C: ProducerContext + 'static>(producer: &ThreadedProducer<C>, timeout: Duration) -> Result<(), KafkaError> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the handle is valid for the producer's lifetime; rd_kafka_flush
    // is thread-safe and, in event mode, only waits.
    let err = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), ms) };
    if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::Flush(err.into()))
    }
}

/// Commits the open transaction, after waiting for its records with [`flush`]
/// (so rust-rdkafka's own flush inside the commit finds nothing to poll
/// for); a retriable failure is tried again (three times).
pub fn commit<C: ProducerContext + 'static>(producer: &ThreadedProducer<C>, timeout: Duration) -> Result<(), KafkaError> {
    flush(producer, timeout)?;
    let mut tries = 0;
    loop {
        match producer.commit_transaction(timeout) {
            Ok(()) => return Ok(()),
            Err(e) if classify(&e) == TxnError::Retriable && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` says the cluster could not be reached or answered in time
/// (worth asking again), not that the request itself is wrong.
pub fn unreachable(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::OperationTimedOut
                | C::RequestTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NetworkException
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
        )
    )
}

/// Moves the consumer back to the committed offsets of its assignment, so
/// whatever was read after them is read again.
pub fn rewind<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Result<(), KafkaError> {
    let committed = consumer.committed(Duration::from_secs(10))?;
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        if let Err(err) = consumer.seek(e.topic(), e.partition(), offset, Duration::from_secs(10)) {
            tracing::warn!(partition = e.partition(), error = %err, "seek after abort failed");
        }
    }
    Ok(())
}

/// Sends on a producer that polls itself, waiting while its queue is full (backpressure).
pub fn send_waiting<K: ToBytes + ?Sized, V: ToBytes + ?Sized, C: ProducerContext<DeliveryOpaque = ()> + 'static>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, V>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn fenced_names_the_epoch_errors_only() {
        for code in [RDKafkaErrorCode::Fenced, RDKafkaErrorCode::ProducerFenced, RDKafkaErrorCode::InvalidProducerEpoch] {
            assert!(fenced(&KafkaError::Flush(code)), "{code:?}");
        }
        for code in [RDKafkaErrorCode::MessageTimedOut, RDKafkaErrorCode::NotCoordinator, RDKafkaErrorCode::InvalidTransactionalState] {
            assert!(!fenced(&KafkaError::Flush(code)), "{code:?}");
        }
    }

    #[test]
    fn a_cluster_out_of_reach_is_unreachable_and_a_wrong_request_is_not() {
        // What a lost node's committed-offset read failed with.
        assert!(unreachable(&KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)));
        assert!(unreachable(&KafkaError::ConsumerCommit(RDKafkaErrorCode::CoordinatorNotAvailable)));
        assert!(!unreachable(&KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed)));
        assert!(!unreachable(&KafkaError::ConsumerCommit(RDKafkaErrorCode::FencedInstanceId)));
    }
}

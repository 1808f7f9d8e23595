//! The pieces every exactly-once role shares: how Kafka transaction errors are
//! treated (after rust-rdkafka's transaction tests: retry the same call, abort
//! and rewind, or stop), the poll round, the commit, the rewind after an abort.

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{OwnedMessage, ToBytes};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use std::time::{Duration, Instant};

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

/// Up to `max` messages: waits up to 100 ms for the first, then at most
/// `wait` for more (a poll round of a consume-transform-produce loop).
pub fn poll_batch<C: ConsumerContext>(consumer: &BaseConsumer<C>, max: usize, wait: Duration) -> Vec<OwnedMessage> {
    let mut batch = Vec::new();
    let mut next = consumer.poll(Duration::from_millis(100));
    let deadline = Instant::now() + wait;
    loop {
        match next {
            Some(Ok(m)) => batch.push(m.detach()),
            Some(Err(e)) => tracing::warn!(error = %e, "poll error"),
            None if batch.is_empty() => return batch,
            None => {}
        }
        if batch.len() >= max || Instant::now() >= deadline {
            return batch;
        }
        next = consumer.poll(deadline.saturating_duration_since(Instant::now()));
    }
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

/// Aborts the open transaction and moves the consumer back to the committed
/// offsets, so the aborted input is read again. `Err` only when the producer
/// is unusable (fatal).
pub fn abort_and_rewind<P: Producer<PC>, PC: ProducerContext, C: ConsumerContext>(producer: &P, consumer: &BaseConsumer<C>, timeout: Duration) -> Result<(), KafkaError> {
    if let Err(e) = producer.abort_transaction(timeout) && classify(&e) == TxnError::Fatal {
        return Err(e);
    }
    rewind(consumer)
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

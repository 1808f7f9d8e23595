//! Reads one topic from a cursor for one subscriber, without a consumer group
//! (nothing is committed: the subscriber holds its position as the cursor),
//! read_committed, into a bounded channel, so a slow subscriber slows its
//! reader and never grows a queue.

use crate::cursor::Cursor;
use orelink_platform::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a stream without a cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Earliest,
    Latest,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// The cursor to start from: `given` for the partitions it names, the start or
/// end of the others. Every partition is in the result, so the first event id
/// already pins where the stream began.
pub async fn starting_cursor(cfg: &Config, topic: &str, given: Cursor, from: From) -> Result<Cursor, KafkaError> {
    let probe: BaseConsumer = cfg.kafka.client_config("subscriptions-probe").create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let md = probe.fetch_metadata(Some(&topic), TIMEOUT)?;
        let mut c = given;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            if c.next(p.id()).is_none() {
                let (low, high) = probe.fetch_watermarks(&topic, p.id(), TIMEOUT)?;
                c.advance(p.id(), if from == From::Earliest { low } else { high } - 1);
            }
        }
        Ok(c)
    })
    .await
    .expect("the probe task does not panic")
}

/// Starts a reader thread at `cursor`; messages arrive in partition order on
/// the receiver. The thread ends when the receiver is dropped or on `cancel`.
pub async fn open(cfg: &Config, topic: &str, cursor: &Cursor, depth: usize, cancel: CancellationToken) -> Result<mpsc::Receiver<Result<OwnedMessage, KafkaError>>, KafkaError> {
    let (cfg, topic, cursor) = (cfg.clone(), topic.to_owned(), cursor.clone());
    // Client creation and metadata block: off the async workers.
    tokio::task::spawn_blocking(move || open_blocking(&cfg, &topic, &cursor, depth, cancel)).await.expect("the reader setup does not panic")
}

fn open_blocking(cfg: &Config, topic: &str, cursor: &Cursor, depth: usize, cancel: CancellationToken) -> Result<mpsc::Receiver<Result<OwnedMessage, KafkaError>>, KafkaError> {
    let consumer: BaseConsumer = cfg
        .kafka
        // Never joined or committed, but librdkafka looks its coordinator up,
        // which needs the group's Describe: a name under the gateway's prefix.
        .reader_config("subscriptions", &format!("{}orelink-gateway-subscriptions", cfg.namespace))
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let at = cursor.next(p.id()).map(Offset::Offset).unwrap_or(Offset::Beginning);
        tpl.add_partition_offset(topic, p.id(), at)?;
    }
    consumer.assign(&tpl)?;
    let (tx, rx) = mpsc::channel(depth);
    std::thread::Builder::new()
        .name("subscription".into())
        .spawn(move || {
            while !cancel.is_cancelled() && !tx.is_closed() {
                match consumer.poll(Duration::from_millis(250)) {
                    None => {}
                    // The send is an effect, not a condition: kept out of a match guard.
                    #[allow(clippy::collapsible_match)]
                    Some(Ok(m)) => {
                        if tx.blocking_send(Ok(m.detach())).is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        })
        .map_err(|e| KafkaError::ClientCreation(format!("subscription thread: {e}")))?;
    Ok(rx)
}

//! Stage 1: put each family's orders, capacity and shares into one order.

use crate::SOURCE_HEADER;
use orelink_codec::{Codec, Record};
use orelink_domain::topology::topics;
use orelink_platform::Config;
use orelink_platform::consume::{Backoff, ConsumeLoop, Done, HandleError, Handler, Inbound, LoopStats, OnRevoke, loop_consumer};
use orelink_platform::dlq::DeadLetters;
use rdkafka::producer::Producer;
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Router {
    consume: ConsumeLoop,
    forward: Forward,
}

struct Forward {
    producer: FutureProducer,
    topic: String,
    namespace: String,
}

impl Handler for Forward {
    async fn handle(&mut self, ev: Inbound) -> Result<Done, HandleError> {
        let family = match &ev.record {
            Record::Order(o) => o.product.family_str().to_owned(),
            Record::Capacity(c) => c.product.family_str().to_owned(),
            Record::SharedOrder(s) => s.product.family_str().to_owned(),
            other => return Err(HandleError::Fatal(format!("the router got a record it does not route: {other:?}"))),
        };
        // The router's own span is the parent of the matcher's.
        let trace = ev.trace;
        let source = ev.topic.strip_prefix(&self.namespace).unwrap_or(&ev.topic).to_owned();
        let headers = trace.to_headers().insert(Header { key: SOURCE_HEADER, value: Some(source.as_bytes()) });
        let payload = ev.value.unwrap_or_default();
        let mut record = FutureRecord::to(&self.topic).key(&family).payload(&payload).headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Done::Later(Box::pin(async move {
                        match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(HandleError::Fatal(format!("forwarding to the matcher input failed: {e}"))),
                            Err(_) => Err(HandleError::Fatal("the producer went away".into())),
                        }
                    })));
                }
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: the local queue is full until the broker catches up.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(HandleError::Retriable(e.to_string())),
            }
        }
    }
}

/// The router of this deployment, subscribed and ready to run.
pub fn router_loop(cfg: &Config, codec: Arc<Codec>) -> Result<Router, rdkafka::error::KafkaError> {
    let producer: FutureProducer = cfg
        .kafka
        .producer_config("matcher-router")
        // 2 ms: at 5k events/s the two cores are saturated, and fewer, larger
        // produce requests cost the broker and this client less than one per
        // event (order->allocation p50 23-26 ms against 27-30 ms with 0 ms,
        // alternating runs; p99 within the spread).
        .set("linger.ms", "2")
        // One partitioner for every writer of the matcher input (Java's, so other clients agree).
        .set("partitioner", "murmur2_random")
        .create()?;
    // Before partitions move, everything forwarded so far reaches the broker:
    // the next owner's re-forwards then come strictly after, and are deduplicated.
    let flushing = producer.clone();
    let on_revoke: OnRevoke = Arc::new(move || {
        if let Err(e) = flushing.flush(Duration::from_secs(30)) {
            tracing::error!(error = %e, "flush on revoke failed; the next owner may reorder this partition's events");
        }
    });
    let inputs: Vec<String> = [topics::ORDERS, topics::CAPACITY, topics::SHARED_ORDERS].iter().map(|t| codec.topic(t)).collect();
    let consumer = loop_consumer(
        &cfg.kafka.member_config("matcher-router", &crate::router_group(cfg), &cfg.matcher.instance()),
        &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(on_revoke),
    )?;
    let dead = DeadLetters::new(producer.clone(), codec.clone(), "matcher");
    let backoff = Backoff { initial: Duration::from_millis(cfg.consumer.retry_backoff_ms), max: Duration::from_millis(cfg.consumer.retry_backoff_max_ms) };
    Ok(Router {
        consume: ConsumeLoop::new(consumer, codec.clone(), dead, backoff),
        forward: Forward { producer, topic: codec.topic(topics::MATCHER_INPUT), namespace: cfg.namespace.clone() },
    })
}

impl Router {
    pub async fn run(mut self, cancel: CancellationToken) -> Result<LoopStats, String> {
        let stats = self.consume.run(&mut self.forward, cancel).await.map_err(|e| e.to_string())?;
        tracing::info!(delivered = stats.delivered, dead_lettered = stats.dead_lettered, "router stopped");
        Ok(stats)
    }
}

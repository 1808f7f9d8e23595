//! Stage 1: put the orders and capacity that Kafka clients write to the
//! contract's per-type topics, and the shares, into the market topic, each
//! family's in one order with what the doors write there directly.
//!
//! The router forwards each event's bytes as they came, on its record key:
//! the contract keys these topics by product family, so the family is known
//! without decoding. It checks only that the key names a family of the
//! catalog (dead-lettering the event here if not); decoding, validation and
//! the check that the key is the event's own family happen once, in the
//! processor, which dead-letters inside its transaction with the source
//! topic, partition and offset that this hop carries in headers.

use orelink_codec::{Codec, Refusal, SourceRef};
use orelink_domain::catalog::Catalog;
use orelink_domain::events::ErrorClass;
use orelink_domain::topology::topics;
use orelink_platform::Config;
use orelink_platform::consume::{Backoff, ConsumeLoop, Done, HandleError, Handler, Inbound, LoopStats, flush_on_revoke, forward, forwarded_headers, loop_consumer};
use orelink_platform::dlq::DeadLetters;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    catalog: Arc<Catalog>,
    dead: DeadLetters,
}

/// A forwarded event's delivery report: durable once the broker has it. A
/// named type, not a boxed future per event.
pub struct Forwarded(DeliveryFuture);

impl Future for Forwarded {
    type Output = Result<(), HandleError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(HandleError::Fatal(format!("forwarding to the market topic failed: {e}"))),
            Err(_) => Err(HandleError::Fatal("the producer went away".into())),
        })
    }
}

impl Handler for Forward {
    const DECODES: bool = false;
    type Later = Forwarded;

    async fn handle(&mut self, ev: Inbound) -> Result<Done<Forwarded>, HandleError> {
        let key = ev.key.as_deref().unwrap_or_default();
        let family = std::str::from_utf8(key).ok().filter(|f| self.catalog.has_family(f));
        let Some(family) = family else {
            // Nowhere to put it in order: no family's partition is its own.
            let refusal = Refusal {
                class: ErrorClass::UnknownReference,
                reason: format!("the record key {:?} is not a product family of the catalog (the contract keys orders, capacity and shared orders by family)", String::from_utf8_lossy(key)),
            };
            let source = SourceRef { topic: &ev.topic, partition: ev.partition, offset: ev.offset, key: ev.key.as_deref(), value: ev.value.as_deref() };
            return match self.dead.send(&source, &refusal, &ev.trace).await {
                Ok(()) => Ok(Done::Dead),
                Err(e) if e.retriable() => Err(HandleError::Retriable(e.to_string())),
                Err(e) => Err(HandleError::Fatal(e.to_string())),
            };
        };
        // The router's own span is the parent of the matcher's.
        let source = ev.topic.strip_prefix(&self.namespace).unwrap_or(&ev.topic);
        let headers = forwarded_headers(&ev.trace, source, ev.partition, ev.offset);
        let payload = ev.value.as_deref().unwrap_or_default();
        let record = FutureRecord::to(&self.topic).key(family).payload(payload).headers(headers);
        Ok(Done::Later(Forwarded(forward(&self.producer, record).await?)))
    }
}

/// The router of this deployment, subscribed and ready to run.
pub fn router_loop(cfg: &Config, codec: Arc<Codec>, catalog: Arc<Catalog>) -> Result<Router, rdkafka::error::KafkaError> {
    let producer: FutureProducer = cfg
        .kafka
        .producer_config("matcher-router")
        // 2 ms: at 5k events/s the two cores are saturated, and fewer, larger
        // produce requests cost the broker and this client less than one per
        // event (order->allocation p50 23-26 ms against 27-30 ms with 0 ms,
        // alternating runs; p99 within the spread).
        .set("linger.ms", "2")
        .create()?;
    let on_revoke = flush_on_revoke(producer.clone());
    let inputs: Vec<String> = [topics::ORDERS, topics::CAPACITY, topics::SHARED_ORDERS].iter().map(|t| codec.topic(t)).collect();
    let consumer = loop_consumer(
        &cfg.kafka.member_config("matcher-router", &crate::router_group(cfg), &cfg.matcher.instance()),
        &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(on_revoke),
    )?;
    let dead = DeadLetters::new(producer.clone(), codec.clone(), "matcher");
    let backoff = Backoff { initial: Duration::from_millis(cfg.consumer.retry_backoff_ms), max: Duration::from_millis(cfg.consumer.retry_backoff_max_ms) };
    Ok(Router {
        consume: ConsumeLoop::new(consumer, codec.clone(), dead.clone(), backoff),
        forward: Forward { producer, topic: codec.topic(topics::MARKET), namespace: cfg.namespace.clone(), catalog, dead },
    })
}

impl Router {
    pub async fn run(mut self, cancel: CancellationToken) -> Result<LoopStats, String> {
        let stats = self.consume.run(&mut self.forward, cancel).await.map_err(|e| e.to_string())?;
        tracing::info!(delivered = stats.delivered, dead_lettered = stats.dead_lettered, "router stopped");
        Ok(stats)
    }
}

//! Stage 1: put each lane's allocations and carriers' offers into the lanes
//! topic, in one order per lane.
//!
//! Allocations are keyed by family, so the router decodes each record (the
//! shared consume loop does, dead-lettering what does not decode or
//! validate) to find its lane: an allocation's from its capacity's and its
//! order's clusters, an offer's from its own. It forwards the original
//! bytes, so the processor decodes exactly what was written.

use orelink_codec::{Codec, Record, Refusal, SourceRef};
use orelink_domain::booking::Lane;
use orelink_domain::events::ErrorClass;
use orelink_domain::topology::topics;
use orelink_platform::Config;
use orelink_platform::consume::{Backoff, ConsumeLoop, Done, HandleError, Handler, Inbound, LoopStats, Pending, flush_on_revoke, forward, forwarded_headers, loop_consumer};
use orelink_platform::dlq::DeadLetters;
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
    dead: DeadLetters,
}

/// The lane a record belongs to, or why it has none.
fn lane_of(record: &Record) -> Result<Lane, Refusal> {
    match record {
        Record::Allocation(a) => Ok(Lane::new(&a.capacity_cluster, &a.order_cluster)),
        Record::TransportOffer(o) => Ok(o.lane()),
        other => Err(Refusal { class: ErrorClass::WrongRecord, reason: format!("not an allocation or a transport offer: {other:?}") }),
    }
}

impl Handler for Forward {
    type Later = Pending;

    async fn handle(&mut self, ev: Inbound) -> Result<Done<Pending>, HandleError> {
        let lane = match ev.record.as_ref().map(lane_of) {
            Some(Ok(lane)) => lane,
            Some(Err(refusal)) => {
                let source = SourceRef { topic: &ev.topic, partition: ev.partition, offset: ev.offset, key: ev.key.as_deref(), value: ev.value.as_deref() };
                return match self.dead.send(&source, &refusal, &ev.trace).await {
                    Ok(()) => Ok(Done::Dead),
                    Err(e) if e.retriable() => Err(HandleError::Retriable(e.to_string())),
                    Err(e) => Err(HandleError::Fatal(e.to_string())),
                };
            }
            None => return Err(HandleError::Fatal("the consume loop handed over an undecoded record".into())),
        };
        let key = lane.key();
        let source = ev.topic.strip_prefix(&self.namespace).unwrap_or(&ev.topic);
        let headers = forwarded_headers(&ev.trace, source, ev.partition, ev.offset);
        let payload = ev.value.as_deref().unwrap_or_default();
        let record = FutureRecord::to(&self.topic).key(&key).payload(payload).headers(headers);
        let delivery = forward(&self.producer, record).await?;
        Ok(Done::Later(Box::pin(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(HandleError::Fatal(format!("forwarding to the lanes topic failed: {e}"))),
                Err(_) => Err(HandleError::Fatal("the producer went away".into())),
            }
        })))
    }
}

/// The router of this deployment, subscribed and ready to run.
pub fn router_loop(cfg: &Config, codec: Arc<Codec>) -> Result<Router, rdkafka::error::KafkaError> {
    let producer: FutureProducer = cfg.kafka.producer_config("booker-router").set("linger.ms", "2").create()?;
    let on_revoke = flush_on_revoke(producer.clone());
    let inputs: Vec<String> = [topics::ALLOCATIONS, topics::TRANSPORT_OFFERS].iter().map(|t| codec.topic(t)).collect();
    let consumer = loop_consumer(
        &cfg.kafka.member_config("booker-router", &crate::router_group(cfg), &cfg.matcher.instance()),
        &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(on_revoke),
    )?;
    let dead = DeadLetters::new(producer.clone(), codec.clone(), "booker");
    let backoff = Backoff { initial: Duration::from_millis(cfg.consumer.retry_backoff_ms), max: Duration::from_millis(cfg.consumer.retry_backoff_max_ms) };
    Ok(Router {
        consume: ConsumeLoop::new(consumer, codec.clone(), dead.clone(), backoff),
        forward: Forward { producer, topic: codec.topic(topics::LANES), namespace: cfg.namespace.clone(), dead },
    })
}

impl Router {
    pub async fn run(mut self, cancel: CancellationToken) -> Result<LoopStats, String> {
        let stats = self.consume.run(&mut self.forward, cancel).await.map_err(|e| e.to_string())?;
        tracing::info!(delivered = stats.delivered, dead_lettered = stats.dead_lettered, "booker router stopped");
        Ok(stats)
    }
}

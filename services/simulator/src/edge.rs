//! Produces the generator's events to Kafka at a rate.

use crate::generator::{Generator, SimEvent, SimRecord};
use orelink_platform::{Config, Reference};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SimStats {
    pub events: u64,
    pub malformed: u64,
    pub per_topic: BTreeMap<String, u64>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("encoding: {0}")]
    Encode(#[from] orelink_codec::EncodeError),
}

/// Sends `rate` events per second for `duration` (or until `cancel`).
pub async fn run(cfg: &Config, reference: &Reference, seed: u64, start_ms: i64, rate: u64, duration: Duration, cancel: CancellationToken) -> Result<SimStats, SimError> {
    let codec = orelink_platform::codec(cfg, reference)?;
    let producer: FutureProducer = cfg.kafka.producer_config("simulator").create()?;
    let mut events = Generator::new(&reference.topology, &reference.catalog, seed, start_ms);
    let mut stats = SimStats::default();
    let mut pending = VecDeque::new();
    let started = Instant::now();
    let rate = rate.max(1);
    while started.elapsed() < duration && !cancel.is_cancelled() {
        let due = started + Duration::from_secs_f64(stats.events as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let SimEvent { topic, key, record, malformed } = events.next().expect("the generator never ends");
        let deployed = codec.topic(topic);
        let bytes = match &record {
            SimRecord::Order(w) => codec.encode_as(&deployed, "orelink.v1.OrderEvent", w).await?,
            SimRecord::Capacity(w) => codec.encode_as(&deployed, "orelink.v1.CapacityEvent", w).await?,
            SimRecord::Inventory(w) => codec.encode(&deployed, w).await?,
            SimRecord::Shipment(w) => codec.encode(&deployed, w).await?,
            SimRecord::TransportOffer(w) => codec.encode(&deployed, w).await?,
            SimRecord::Garbage(b) => b.clone(),
        };
        let delivery = producer.send_result(FutureRecord::to(&deployed).key(&key).payload(&bytes)).map_err(|(e, _)| e)?;
        pending.push_back(delivery);
        while pending.len() > 5_000 {
            if let Ok(Err((e, _))) = pending.pop_front().expect("non-empty").await {
                return Err(e.into());
            }
        }
        stats.events += 1;
        stats.malformed += malformed as u64;
        *stats.per_topic.entry(topic.to_owned()).or_default() += 1;
    }
    for d in pending {
        if let Ok(Err((e, _))) = d.await {
            return Err(e.into());
        }
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

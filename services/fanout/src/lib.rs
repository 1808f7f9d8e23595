//! orelink-fanout: routes every shipment event to the topic of the carrier
//! partner it names (`orelink.shipments.partner.<id>.v1`), so a logistics
//! partner reads its own shipments and only those.
//!
//! Delivery: exactly once, on the one exactly-once loop
//! (`orelink_platform::txn_loop`): each round is one Kafka transaction holding
//! the routed records (the original Confluent Avro bytes, keyed by shipment
//! id, so per-shipment order is kept), the dead letters (undecodable events, a
//! carrier that is no partner), and the consumed offsets. A registry outage
//! drops the round and waits; it never dead-letters.

use orelink_codec::{Codec, DecodeError, Record, Refusal, SourceRef};
use orelink_domain::events::ErrorClass;
use orelink_domain::topology::topics;
use orelink_platform::telemetry;
use orelink_platform::trace::TraceContext;
use orelink_platform::txn_loop::{self, LoopRoleError, Step, Transform, TxnLoop};
use orelink_platform::{Config, Reference};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The role's error: the loop's, shared with the other loop roles.
pub type FanoutError = LoopRoleError;

#[derive(Debug, Default, Clone, Copy)]
pub struct FanoutStats {
    pub transactions: u64,
    pub routed: u64,
    pub dead_lettered: u64,
    pub aborts: u64,
}

/// Consumer group of the role, per namespace.
pub fn group(cfg: &Config) -> String {
    format!("{}orelink-fanout", cfg.namespace)
}

/// The dead-letter topic is the loop's first output; the partners' topics follow.
const DLQ: usize = 0;

/// The fanout's transform: a shipment to its carrier's topic, or a dead letter.
pub struct Routing {
    codec: Arc<Codec>,
    rt: tokio::runtime::Handle,
    /// Carrier id -> the output index of its partner's topic.
    partner_of: HashMap<String, usize>,
}

impl Routing {
    /// The transform and the outputs it writes, in the loop's order.
    pub fn new(codec: Arc<Codec>, reference: &Reference, rt: tokio::runtime::Handle) -> (Routing, Vec<String>) {
        let mut outputs = vec![codec.dlq_topic()];
        let mut partner_of = HashMap::new();
        for p in &reference.topology.partners {
            outputs.push(codec.topic(&topics::partner(p.id.as_str())));
            partner_of.insert(p.carrier_id.clone(), outputs.len() - 1);
        }
        (Routing { codec, rt, partner_of }, outputs)
    }
}

/// Where one decoded shipment goes.
#[derive(Debug, PartialEq)]
enum Route {
    /// To this output (a partner's topic), keyed by shipment id.
    Partner { output: usize, key: String },
    Dead(Refusal),
}

impl Routing {
    /// Pure: a decoded (or refused) event to its route.
    fn route(&self, decoded: Result<Record, Refusal>) -> Route {
        match decoded {
            Ok(Record::Shipment(s)) => match self.partner_of.get(s.carrier_id.as_str()) {
                Some(&output) => Route::Partner { output, key: s.shipment_id.to_string() },
                None => Route::Dead(Refusal { class: ErrorClass::UnknownReference, reason: format!("carrier {} is not a partner in topology/partners.toml", s.carrier_id) }),
            },
            Ok(other) => Route::Dead(Refusal { class: ErrorClass::WrongRecord, reason: format!("not a shipment: {other:?}") }),
            Err(r) => Route::Dead(r),
        }
    }
}

impl Transform for Routing {
    fn apply(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<txn_loop::Record>) -> Result<(), Step> {
        let span = tracing::debug_span!("route", partition = m.partition(), offset = m.offset());
        let _guard = span.enter();
        let trace = telemetry::hop(&span, TraceContext::from_headers(m.headers()));
        let decoded = match self.rt.block_on(self.codec.decode(m.topic(), m.payload())) {
            Ok(r) => Ok(r),
            Err(DecodeError::Refused(r)) => Err(r),
            // The registry is away: the round waits, nothing is dead-lettered.
            Err(DecodeError::Retry(e)) => return Err(Step::Retry(format!("registry unavailable: {e}"))),
        };
        let refusal = match self.route(decoded) {
            Route::Partner { output, key } => {
                // The original bytes, keyed by shipment id: per-shipment order holds.
                out.push(txn_loop::Record { output, key: Arc::from(key), payload: m.payload().unwrap_or_default().to_vec(), trace });
                return Ok(());
            }
            Route::Dead(r) => r,
        };
        let source = SourceRef { topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), value: m.payload() };
        out.push(txn_loop::Record::dead_letter(&self.codec, &self.rt, &source, &refusal, "fanout", DLQ, trace)?);
        Ok(())
    }
}

/// Runs the role until `cancel` (on a thread of its own: transaction calls block).
pub async fn run(cfg: &Config, reference: &Reference, cancel: CancellationToken) -> Result<FanoutStats, FanoutError> {
    let codec = orelink_platform::codec(cfg, reference).map_err(|e| LoopRoleError::Config(e.to_string()))?;
    let input = codec.topic(topics::SHIPMENTS);
    let (mut routing, outputs) = Routing::new(codec, reference, tokio::runtime::Handle::current());
    let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
    let settings = txn_loop::Settings {
        inputs: vec![input],
        outputs,
        batch_max: cfg.matcher.batch_max,
        batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
        txn_timeout,
        stuck_after: cfg.kafka.stuck_after(),
        retry_backoff: Duration::from_millis(cfg.consumer.retry_backoff_ms),
        role: "fanout".into(),
    };
    let mut producer = cfg.kafka.transactional_config("fanout", &format!("{}orelink-fanout-{}", cfg.namespace, cfg.matcher.instance()), txn_timeout);
    producer.set("linger.ms", "1");
    // A static member: a restarted instance takes its partitions back at once.
    let txn = TxnLoop::new(&cfg.kafka.member_config("fanout", &group(cfg), &cfg.matcher.instance()), &producer, settings)?;
    let done = tokio::task::spawn_blocking(move || txn.run(&mut routing, &cancel)).await.map_err(|e| LoopRoleError::Fatal(e.to_string()))??;
    let stats = FanoutStats {
        transactions: done.transactions,
        routed: done.records.iter().skip(1).sum(),
        dead_lettered: done.records[DLQ],
        aborts: done.aborts,
    };
    tracing::info!(?stats, "fanout stopped");
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orelink_domain::events::{ShipmentEvent, ShipmentStatus, wire};
    use orelink_domain::TransportMode;

    fn routing() -> (Routing, Vec<String>) {
        let reference = Reference::embedded();
        let mut cfg = Config::load(&orelink_platform::config::Sources::default()).unwrap();
        cfg.namespace = "t.".into();
        let codec = orelink_platform::codec(&cfg, &reference).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        Routing::new(codec, &reference, rt.handle().clone())
    }

    fn shipment(carrier: &str) -> Record {
        let w = wire::ShipmentEvent {
            event_id: "e1".into(),
            event_time: 1_795_000_000_000,
            shipment_id: "SHP-1".into(),
            allocation_id: None,
            carrier_id: carrier.into(),
            mode: TransportMode::Road,
            status: ShipmentStatus::InTransit,
            from_site: "baise-pingguo-smelter".into(),
            to_site: "nanning-jiangnan-processing".into(),
            quantity_kg: 30_000,
            lat: None,
            lon: None,
            eta: None,
        };
        let reference = Reference::embedded();
        let r = reference.lookup();
        Record::Shipment(ShipmentEvent::validate(&w, &r).unwrap())
    }

    #[test]
    fn a_shipment_goes_to_its_carriers_topic_and_anything_else_is_a_dead_letter() {
        let (routing, outputs) = routing();
        assert_eq!(outputs[DLQ], "t.orelink.dlq.v1");
        let partner = &Reference::embedded().topology.partners[0];
        match routing.route(Ok(shipment(&partner.carrier_id))) {
            Route::Partner { output, key } => {
                assert_eq!(outputs[output], format!("t.{}", topics::partner(partner.id.as_str())));
                assert_eq!(key, "SHP-1");
            }
            other => panic!("{other:?}"),
        }
        match routing.route(Ok(shipment("91450100MA5L0NOPE1"))) {
            Route::Dead(r) => assert_eq!(r.class, ErrorClass::UnknownReference),
            other => panic!("{other:?}"),
        }
        let refused = Refusal { class: ErrorClass::Undecodable, reason: "garbage".into() };
        assert_eq!(routing.route(Err(refused.clone())), Route::Dead(refused));
    }
}

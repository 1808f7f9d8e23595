//! Stage 2: apply each lane's allocations and offers in order, exactly once,
//! on the one exactly-once loop. Each lanes record is applied to its
//! partition's booking engine and rendered into planned shipments and
//! booking records; the loop writes them with the round's input offsets in
//! one transaction. A partition's engine is rebuilt by replaying the lanes
//! topic up to the committed offset from the first message of an
//! assignment, and again after an abort.

use orelink_codec::{Codec, DecodeError, Record, Refusal, SourceRef};
use orelink_domain::booking::{self, Booker, Lane, ToBook};
use orelink_domain::events::{ErrorClass, ShipmentStatus, wire};
use orelink_domain::topology::topics;
use orelink_platform::consume::{SOURCE_HEADER, source_of};
use orelink_platform::telemetry;
use orelink_platform::trace::TraceContext;
use orelink_platform::txn_loop::{self, LoopRoleError, Part, Step, Transform, TxnLoop};
use orelink_platform::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The processor's error: the loop's, shared with the other loop roles.
pub type ProcessorError = LoopRoleError;

/// The loop's outputs, in this order.
const SHIPMENTS: usize = 0;
const BOOKINGS: usize = 1;
const DEAD_LETTERS: usize = 2;

/// Counts for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct BookerStats {
    pub transactions: u64,
    pub events: u64,
    /// Planned shipments written (one per booked part).
    pub planned: u64,
    /// Booking records written (booked parts and unbooked remainders).
    pub bookings: u64,
    pub dead_lettered: u64,
    pub aborts: u64,
    pub restores: u64,
    pub replayed: u64,
}

pub struct Processor {
    txn: TxnLoop,
    booking: Booking,
}

impl Processor {
    pub fn new(cfg: &Config, codec: Arc<Codec>, rt: tokio::runtime::Handle) -> Result<Processor, ProcessorError> {
        let txn_timeout = Duration::from_millis(cfg.matcher.transaction_timeout_ms);
        let input_topic = codec.topic(topics::LANES);
        let settings = txn_loop::Settings {
            inputs: vec![input_topic.clone()],
            outputs: vec![codec.topic(topics::SHIPMENTS), codec.topic(topics::BOOKINGS), codec.dlq_topic()],
            batch_max: cfg.matcher.batch_max,
            batch_wait: Duration::from_millis(cfg.matcher.batch_wait_ms),
            txn_timeout,
            stuck_after: cfg.kafka.stuck_after(),
            retry_backoff: Duration::from_millis(cfg.consumer.retry_backoff_ms),
            role: "booker".into(),
        };
        let producer = cfg.kafka.transactional_config("booker", &format!("{}orelink-booker-{}", cfg.namespace, cfg.matcher.instance()), txn_timeout);
        let txn = TxnLoop::new(&cfg.kafka.member_config("booker", &crate::processor_group(cfg), &cfg.matcher.instance()), producer.clone().set("linger.ms", "0"), settings)?;
        let booking = Booking {
            shipments_topic: codec.topic(topics::SHIPMENTS),
            bookings_topic: codec.topic(topics::BOOKINGS),
            codec,
            rt,
            input_topic,
            restore_config: cfg.kafka.reader_config("booker-restore", &format!("{}orelink-booker-restore", cfg.namespace)),
            books: BTreeMap::new(),
            outputs: Vec::new(),
            stats: BookerStats::default(),
            horizon_ms: cfg.matcher.dedup_horizon_ms,
        };
        Ok(Processor { txn, booking })
    }

    /// Runs until `cancel`, then commits the round it holds and returns.
    pub fn run(self, cancel: &CancellationToken) -> Result<BookerStats, ProcessorError> {
        let Processor { txn, mut booking } = self;
        let done = txn.run(&mut booking, cancel)?;
        let stats = BookerStats {
            transactions: done.transactions,
            events: done.events,
            planned: done.records[SHIPMENTS],
            bookings: done.records[BOOKINGS],
            dead_lettered: done.records[DEAD_LETTERS],
            aborts: done.aborts,
            ..booking.stats
        };
        tracing::info!(?stats, "booker processor stopped");
        Ok(stats)
    }
}

/// The booker's transform: one booking engine per lanes partition.
struct Booking {
    codec: Arc<Codec>,
    rt: tokio::runtime::Handle,
    input_topic: String,
    shipments_topic: String,
    bookings_topic: String,
    restore_config: rdkafka::ClientConfig,
    books: BTreeMap<i32, Booker>,
    outputs: Vec<booking::Output>,
    /// The dedup horizon (`matcher.dedup_horizon_ms`): ids are remembered, and
    /// ended offers kept, this long in the lanes topic's log time.
    horizon_ms: i64,
    /// Restores (the loop counts the rest).
    stats: BookerStats,
}

/// One lanes record, as the engine reads it; an allocation is kept whole,
/// since its booked parts are rendered with its sites and planning freight.
#[derive(Debug, Clone)]
pub enum Read {
    Allocation(Box<wire::Allocation>),
    Offer(booking::Input),
}

impl Read {
    fn input(&self) -> booking::Input {
        match self {
            Read::Allocation(a) => booking::Input::Allocation(to_book(a)),
            Read::Offer(i) => i.clone(),
        }
    }
}

/// What booking reads of an allocation. One from a writer that predates
/// `pick_up` and `deliver_by` is picked up when decided and has no deadline.
fn to_book(a: &wire::Allocation) -> ToBook {
    ToBook {
        allocation_id: a.allocation_id.clone(),
        lane: Lane::new(&a.capacity_cluster, &a.order_cluster),
        quantity_kg: a.quantity_kg,
        pick_up: a.pick_up.unwrap_or(a.decided_at),
        deliver_by: a.deliver_by.unwrap_or(i64::MAX),
    }
}

/// The records one allocation's booking outputs become: a `PLANNED`
/// shipment and a booking per booked part (numbered from 1 in the order the
/// engine took the offers), and a booking for an unbooked remainder. Pure:
/// a replay renders the same bytes.
pub fn render(a: &wire::Allocation, outputs: &[booking::Output]) -> (Vec<wire::ShipmentEvent>, Vec<(Lane, wire::Booking)>) {
    let (mut shipments, mut bookings) = (Vec::new(), Vec::new());
    let mut n = 0;
    let pick_up = a.pick_up.unwrap_or(a.decided_at);
    for o in outputs {
        match o {
            booking::Output::Booked(b) => {
                n += 1;
                shipments.push(wire::ShipmentEvent {
                    event_id: format!("bkg-{}-{n}", a.allocation_id),
                    event_time: a.decided_at,
                    shipment_id: format!("SHP-{}-{n}", a.allocation_id),
                    allocation_id: Some(a.allocation_id.clone()),
                    carrier_id: b.carrier_id.clone(),
                    mode: b.mode,
                    status: ShipmentStatus::Planned,
                    from_site: a.from_site.clone(),
                    to_site: a.destination_site.clone(),
                    quantity_kg: b.quantity_kg,
                    lat: None,
                    lon: None,
                    eta: Some(b.arrival),
                });
                bookings.push((
                    b.lane.clone(),
                    wire::Booking {
                        booking_id: format!("BKG-{}-{n}", a.allocation_id),
                        allocation_id: a.allocation_id.clone(),
                        from_cluster: b.lane.from.clone(),
                        to_cluster: b.lane.to.clone(),
                        booked: true,
                        offer_id: Some(b.offer_id.clone()),
                        carrier_id: Some(b.carrier_id.clone()),
                        mode: Some(b.mode),
                        quantity_kg: b.quantity_kg,
                        pick_up: b.pick_up,
                        arrival: Some(b.arrival),
                        price_cny_per_t: Some(b.price_cny_per_t),
                        planning_freight_cny_per_t: a.freight_cny_per_t,
                        decided_at: a.decided_at,
                    },
                ));
            }
            booking::Output::Unbooked { allocation_id, lane, quantity_kg } => bookings.push((
                lane.clone(),
                wire::Booking {
                    booking_id: format!("UNB-{allocation_id}"),
                    allocation_id: allocation_id.clone(),
                    from_cluster: lane.from.clone(),
                    to_cluster: lane.to.clone(),
                    booked: false,
                    offer_id: None,
                    carrier_id: None,
                    mode: None,
                    quantity_kg: *quantity_kg,
                    pick_up,
                    arrival: None,
                    price_cny_per_t: None,
                    planning_freight_cny_per_t: a.freight_cny_per_t,
                    decided_at: a.decided_at,
                },
            )),
            booking::Output::Ignored { .. } => {}
        }
    }
    (shipments, bookings)
}

/// One lanes message as the engine reads it, or why it is refused: it does
/// not decode as a record of the topic it was first written to (the
/// router's header), or its key is not its lane. Waits, never refuses,
/// while the registry is away: a refusal changes the books.
pub fn read_of<M: Message>(codec: &Codec, rt: &tokio::runtime::Handle, m: &M) -> Result<Read, Refusal> {
    let header = |name: &str| m.headers().and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value));
    let topic = codec.topic(&header(SOURCE_HEADER).map_or(std::borrow::Cow::Borrowed(topics::LANES), String::from_utf8_lossy));
    let mut attempt = 0u32;
    let (read, lane) = loop {
        match rt.block_on(codec.decode(&topic, m.payload())) {
            Ok(Record::Allocation(a)) => {
                let lane = Lane::new(&a.capacity_cluster, &a.order_cluster);
                break (Read::Allocation(Box::new(a)), lane);
            }
            Ok(Record::TransportOffer(o)) => break (Read::Offer(o.to_booking()), o.lane()),
            Ok(other) => return Err(Refusal { class: ErrorClass::WrongRecord, reason: format!("not an allocation or a transport offer: {other:?}") }),
            Err(DecodeError::Refused(r)) => return Err(r),
            Err(DecodeError::Retry(e)) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "registry unavailable while decoding the lanes topic");
                std::thread::sleep(Duration::from_millis(200 * attempt.min(25) as u64));
            }
        }
    };
    let key = m.key().unwrap_or_default();
    if key != lane.key().as_bytes() {
        return Err(Refusal { class: ErrorClass::Invalid, reason: format!("keyed {:?}, but its lane is {}", String::from_utf8_lossy(key), lane.key()) });
    }
    Ok(read)
}

impl Transform for Booking {
    fn apply(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<txn_loop::Record>) -> Result<(), Step> {
        let p = m.partition();
        if !self.books.contains_key(&p) {
            self.restore(p, m.offset()).map_err(|e| Step::Retry(format!("restoring partition {p}: {e}")))?;
        }
        let parent = TraceContext::from_headers(m.headers());
        let read = match read_of(&self.codec, &self.rt, m) {
            Ok(read) => read,
            Err(refusal) => {
                // Refused records change no book (a replay skips them too).
                let (topic, partition, offset) = source_of(&self.codec, m).unwrap_or_else(|| (self.input_topic.clone(), m.partition(), m.offset()));
                let source = SourceRef { topic: &topic, partition, offset, key: m.key(), value: m.payload() };
                let trace = parent.map_or_else(TraceContext::root, |p| p.child());
                out.push(txn_loop::Record::dead_letter(&self.codec, &self.rt, &source, &refusal, "booker", DEAD_LETTERS, trace)?);
                return Ok(());
            }
        };
        let span = tracing::debug_span!("book", partition = p, offset = m.offset());
        let ctx = telemetry::hop(&span, parent);
        let _guard = span.enter();
        let book = self.books.get_mut(&p).expect("restored above");
        self.outputs.clear();
        book.apply(&read.input(), log_ms(m), &mut self.outputs);
        let Read::Allocation(a) = &read else {
            for o in &self.outputs {
                if let booking::Output::Ignored { reason } = o {
                    tracing::debug!(reason, "offer changed nothing");
                }
            }
            return Ok(());
        };
        let (shipments, bookings) = render(a, &self.outputs);
        let encode_failed = |e: orelink_codec::EncodeError| Step::Retry(format!("encoding a booking: {e}"));
        for s in shipments {
            let payload = self.rt.block_on(self.codec.encode(&self.shipments_topic, &s)).map_err(encode_failed)?;
            out.push(txn_loop::Record { output: SHIPMENTS, key: Arc::from(s.shipment_id.as_str()), payload, trace: ctx });
        }
        for (lane, b) in bookings {
            let payload = self.rt.block_on(self.codec.encode(&self.bookings_topic, &b)).map_err(encode_failed)?;
            out.push(txn_loop::Record { output: BOOKINGS, key: Arc::from(lane.key()), payload, trace: ctx });
        }
        Ok(())
    }

    fn revoked(&mut self, partitions: &[Part]) {
        for p in partitions {
            if self.books.remove(&p.partition).is_some() {
                tracing::info!(partition = p.partition, "partition revoked; its book is dropped");
            }
        }
    }

    /// The books hold effects that were never committed: drop them; each is
    /// rebuilt from the first message read after the rewind.
    fn aborted(&mut self) {
        self.books.clear();
    }
}

impl Booking {
    /// A partition's first message in this assignment is at its committed
    /// offset `upto`: the input before it rebuilds its book.
    fn restore(&mut self, p: i32, upto: i64) -> Result<(), KafkaError> {
        let started = Instant::now();
        let (book, n) = replay(&self.restore_config, &self.input_topic, p, upto, self.horizon_ms, &self.codec, &self.rt)?;
        tracing::info!(partition = p, replayed = n, upto, elapsed_ms = started.elapsed().as_millis() as u64, "booking book restored");
        self.stats.restores += 1;
        self.stats.replayed += n;
        self.books.insert(p, book);
        Ok(())
    }
}

/// A lanes record's log-append time, which ages the books (the same on a
/// replay); a record without one ages nothing.
pub fn log_ms<M: Message>(m: &M) -> i64 {
    m.timestamp().to_millis().unwrap_or(i64::MIN)
}

/// Partition `p` of the lanes topic applied from its start up to `upto`
/// (exclusive) to a new engine; what the live processor refused is skipped
/// here too. Also how a test replays the input to compare.
pub fn replay(config: &rdkafka::ClientConfig, topic: &str, p: i32, upto: i64, horizon_ms: i64, codec: &Codec, rt: &tokio::runtime::Handle) -> Result<(Booker, u64), KafkaError> {
    let mut book = Booker::with_horizon(horizon_ms);
    if upto <= 0 {
        return Ok((book, 0));
    }
    let consumer: BaseConsumer = config.create()?;
    let (low, _high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
    if upto <= low {
        return Ok((book, 0));
    }
    let mut outputs = Vec::new();
    let n = txn_loop::replay_partition(&consumer, topic, p, low, upto, |m| {
        if let Ok(read) = read_of(codec, rt, m) {
            book.apply(&read.input(), log_ms(m), &mut outputs);
            outputs.clear();
        }
    })?;
    Ok((book, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orelink_domain::TransportMode;
    use orelink_platform::Reference;

    fn allocation() -> wire::Allocation {
        wire::Allocation {
            allocation_id: "ALC-ORD-1-1".into(),
            order_id: "ORD-1".into(),
            capacity_id: "CAP-1".into(),
            order_cluster: "nanning".into(),
            capacity_cluster: "baise".into(),
            buyer_id: "91450100MA5L0ABC1X".into(),
            provider_id: "91451000MA5L0PRV1Y".into(),
            product_code: "AL-INGOT-AL99.70".into(),
            quantity_kg: 90_000,
            price_cny_per_t: 20_400,
            freight_cny_per_t: 120,
            from_site: "baise-pingguo-smelter".into(),
            destination_site: "nanning-jiangnan-processing".into(),
            decided_at: 1_795_000_000_000,
            explanation: wire::Explanation {
                rank: 1,
                home_cluster: false,
                requested_product_code: "AL-INGOT-AL99.70".into(),
                landed_cost_cny_per_t: 20_520,
                distance_km: 250,
                transit_hours: 10,
                mode: TransportMode::Road,
                energy_kwh_per_t: None,
                summary: String::new(),
            },
            pick_up: Some(1_795_000_100_000),
            deliver_by: Some(1_795_600_000_000),
        }
    }

    fn offer(id: &str, kg: i64, price: i64) -> booking::Input {
        booking::Input::Offered(booking::Offer {
            offer_id: id.into(),
            carrier_id: "91451200MA5L0GYH4H".into(),
            mode: TransportMode::Road,
            lane: Lane::new("baise", "nanning"),
            capacity_kg: kg,
            available_from: 1_795_000_000_000,
            available_until: 1_795_300_000_000,
            price_cny_per_t: price,
            transit_hours: 8,
        })
    }

    #[test]
    fn an_allocation_split_over_two_offers_is_two_planned_shipments_and_its_remainder_a_booking() {
        let mut book = Booker::new();
        let mut out = Vec::new();
        book.apply(&offer("OFF-A", 40_000, 110), 1_795_000_000_000, &mut out);
        book.apply(&offer("OFF-B", 30_000, 100), 1_795_000_000_000, &mut out);
        let a = allocation();
        book.apply(&booking::Input::Allocation(to_book(&a)), 1_795_000_000_000, &mut out);
        let (shipments, bookings) = render(&a, &out);
        // The cheaper offer first.
        let parts: Vec<_> = shipments.iter().map(|s| (s.shipment_id.as_str(), s.quantity_kg, s.status)).collect();
        assert_eq!(parts, [("SHP-ALC-ORD-1-1-1", 30_000, ShipmentStatus::Planned), ("SHP-ALC-ORD-1-1-2", 40_000, ShipmentStatus::Planned)]);
        assert!(shipments.iter().all(|s| s.eta == Some(1_795_000_100_000 + 8 * 3_600_000) && s.to_site == "nanning-jiangnan-processing"));
        let ids: Vec<_> = bookings.iter().map(|(l, b)| (l.key(), b.booking_id.as_str(), b.booked, b.quantity_kg, b.offer_id.as_deref())).collect();
        assert_eq!(
            ids,
            [
                ("baise>nanning".to_owned(), "BKG-ALC-ORD-1-1-1", true, 30_000, Some("OFF-B")),
                ("baise>nanning".to_owned(), "BKG-ALC-ORD-1-1-2", true, 40_000, Some("OFF-A")),
                ("baise>nanning".to_owned(), "UNB-ALC-ORD-1-1", false, 20_000, None),
            ]
        );
        // Every record is one the hub's own checks accept.
        let reference = Reference::embedded();
        let r = reference.lookup();
        for s in &shipments {
            orelink_domain::events::ShipmentEvent::validate(s, &r).unwrap();
        }
        for (_, b) in &bookings {
            orelink_domain::events::validate_booking(b, &r).unwrap();
        }
    }
}

//! The matcher role on the real stack: allocations, trace context across the
//! hop, and two instances sharing the partitions.

use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_platform::trace::TraceContext;
use orelink_tests::{TestEnv, actual_allocations, capacity_wire, expected_allocations, order_wire, produce_workload};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

/// Fields of every `consume` (router) and `match` (processor) span, by span
/// id, as created and later recorded; captured by a tracing layer.
static SPANS: OnceLock<Mutex<HashMap<u64, HashMap<String, String>>>> = OnceLock::new();

struct Capture;

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().to_owned(), v.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        if ["match", "consume"].contains(&attrs.metadata().name()) {
            let mut m = HashMap::from([("name".to_owned(), attrs.metadata().name().to_owned())]);
            attrs.record(&mut Fields(&mut m));
            SPANS.get_or_init(Default::default).lock().unwrap().insert(id.into_u64(), m);
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(m) = SPANS.get_or_init(Default::default).lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(m));
        }
    }
}

fn capture_spans() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber per test binary");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_filled_and_the_allocation_carries_its_trace() {
    capture_spans();
    orelink_platform::metrics::install();
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "trace"), env.reference.clone(), cancel.clone()));

    // Nanning aluminium capacity, then a Nanning order for a lower grade.
    let cap = capacity_wire(1, "nanning-jiangnan-processing", "nanning", "AL-INGOT-AL99.85", 400_000, 20_300);
    let capacity_topic = env.topic(topics::CAPACITY);
    env.produce(&capacity_topic, "AL-INGOT", &codec.encode(&capacity_topic, &cap).await.unwrap()).await;
    // Written as Kafka clients write them, to the per-type topics: the router
    // reads the two independently, so let the capacity reach the market
    // topic first, and the order is what causes the allocation.
    let input = env.topic(topics::MARKET);
    env.wait_for_a_record(&input, "the capacity never reached the market topic").await;
    let order = order_wire(1);
    let orders = env.topic(topics::ORDERS);
    let sent = TraceContext::root();
    env.produce_with_headers(&orders, "AL-INGOT", &codec.encode(&orders, &order).await.unwrap(), sent.to_headers()).await;

    let allocations = env.consumer(&env.topic(topics::ALLOCATIONS));
    let got = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        use rdkafka::Message;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = rdkafka::consumer::BaseConsumer::poll(&allocations, Duration::from_millis(200)) {
                let trace = TraceContext::from_headers(m.headers());
                return Some((m.payload().unwrap().to_vec(), trace, m.key().map(<[u8]>::to_vec)));
            }
        }
        allocations.unsubscribe();
        None
    })
    .await
    .unwrap()
    .expect("an allocation within 60 s");
    let (payload, trace, key) = got;
    assert_eq!(key.as_deref(), Some(&b"AL-INGOT"[..]));
    let Record::Allocation(a) = codec.decode(&env.topic(topics::ALLOCATIONS), Some(&payload)).await.unwrap() else { panic!("not an allocation") };
    assert_eq!((a.order_id.as_str(), a.capacity_id.as_str(), a.quantity_kg), ("ORD-NN-00001", "CAP-1", 250_000));
    assert_eq!((a.product_code.as_str(), a.explanation.requested_product_code.as_str()), ("AL-INGOT-AL99.85", "AL-INGOT-AL99.70"));
    assert!(a.explanation.home_cluster);
    assert_eq!(a.explanation.landed_cost_cny_per_t, a.price_cny_per_t + a.freight_cny_per_t);
    assert!(a.explanation.landed_cost_cny_per_t <= order.max_price_cny_per_t);

    // The allocation's context is the matcher's span, a child of the
    // router's, itself a child of the order's.
    let trace = trace.expect("the allocation has a traceparent header");
    assert_eq!(trace.trace_id, sent.trace_id, "same trace as the order");
    assert_ne!(trace.span_id, sent.span_id);
    let spans: Vec<_> = SPANS.get().unwrap().lock().unwrap().values().cloned().collect();
    let by_id = |id: &str| spans.iter().find(|s| s.get("span_id").map(String::as_str) == Some(id));
    let matched = by_id(&trace.span_id_hex()).expect("the matcher's span for the order was recorded");
    assert_eq!(matched["name"], "match");
    assert_eq!(matched.get("trace_id"), Some(&sent.trace_id_hex()));
    let routed = by_id(&matched["parent_span_id"]).expect("the matcher's span has the router's span as its parent");
    assert_eq!(routed["name"], "consume");
    assert_eq!(routed.get("parent_span_id"), Some(&sent.span_id_hex()), "the router's span is a child of the order's span");
    assert_eq!(routed.get("trace_id"), Some(&sent.trace_id_hex()));

    // The book's gauges, set when the round that allocated was sealed: the
    // filled order and its capacity are held (closed ones leave a horizon
    // later), with their two event ids.
    let text = orelink_platform::metrics::render();
    let gauge = |kind: &str| {
        let prefix = format!("orelink_matcher_book_entries{{topic=\"{input}\",");
        let wanted = format!("kind=\"{kind}\"}} ");
        text.lines().filter(|l| l.starts_with(&prefix) && l.contains(&wanted)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>()
    };
    assert_eq!((gauge("orders"), gauge("capacities"), gauge("event_ids")), (1.0, 1.0, 2.0), "{text}");

    cancel.cancel();
    matcher.await.unwrap().expect("the matcher stops cleanly");
}

/// The router forwards on the record key without decoding; what it cannot
/// place (a key that is no family) it dead-letters, and what the processor
/// refuses (undecodable, or keyed by another family than its product's) the
/// processor dead-letters in its transaction. Either way the dead letter names
/// where the event was first written, and the events behind it are matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_the_matcher_cannot_use_are_dead_lettered_by_their_source_and_the_rest_are_matched() {
    use orelink_domain::events::ErrorClass;
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "poison"), env.reference.clone(), cancel.clone()));
    let (orders, capacity) = (env.topic(topics::ORDERS), env.topic(topics::CAPACITY));
    let producer = env.producer();
    let send = async |topic: &str, key: &str, value: Vec<u8>| {
        let d = producer.send(rdkafka::producer::FutureRecord::to(topic).key(key).payload(&value), Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produced");
        (topic.to_owned(), d.partition, d.offset)
    };
    let cap = capacity_wire(1, "nanning-jiangnan-processing", "nanning", "AL-INGOT-AL99.85", 400_000, 20_300);
    let mis_keyed = send(&orders, "SN-INGOT", codec.encode(&orders, &order_wire(2)).await.unwrap()).await;
    let no_family = send(&capacity, "NOT-A-FAMILY", codec.encode(&capacity, &cap).await.unwrap()).await;
    let garbage = send(&orders, "AL-INGOT", b"\xff not avro".to_vec()).await;
    send(&capacity, "AL-INGOT", codec.encode(&capacity, &cap).await.unwrap()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    send(&orders, "AL-INGOT", codec.encode(&orders, &order_wire(1)).await.unwrap()).await;

    let dlq = env.topic(topics::DLQ);
    let want = [(mis_keyed, ErrorClass::Invalid, "is of family AL-INGOT"), (no_family, ErrorClass::UnknownReference, "not a product family"), (garbage, ErrorClass::Undecodable, "")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let mut letters = Vec::new();
        for m in env.read_topic(&dlq).await {
            if let Ok(Record::DeadLetter(d)) = codec.decode(&dlq, rdkafka::Message::payload(&m)).await {
                letters.push(d);
            }
        }
        if letters.len() >= want.len() {
            break letters;
        }
        assert!(tokio::time::Instant::now() < deadline, "dead letters so far: {letters:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(letters.len(), want.len(), "{letters:?}");
    for ((topic, partition, offset), class, reason) in want {
        let d = letters.iter().find(|d| (d.source_topic.as_str(), d.source_partition, d.source_offset) == (topic.as_str(), partition, offset)).unwrap_or_else(|| panic!("no dead letter for {topic}:{partition}:{offset} in {letters:?}"));
        assert_eq!((d.error_class, d.role.as_str()), (class, "matcher"), "{d:?}");
        assert!(d.reason.contains(reason), "{d:?}");
    }

    // The good capacity and order behind them: allocated.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = actual_allocations(&env, &codec).await;
        if let Some(a) = got.get("AL-INGOT").and_then(|a| a.first()) {
            assert_eq!((a.order_id.as_str(), a.capacity_id.as_str(), a.quantity_kg), ("ORD-NN-00001", "CAP-1", 250_000));
            assert_eq!(got.values().flatten().count(), 1, "{got:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the good order was not allocated");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cancel.cancel();
    let stats = matcher.await.unwrap().expect("the matcher stops cleanly");
    assert_eq!((stats.router.dead_lettered, stats.processor.dead_lettered), (1, 2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_partitions_and_hand_over_without_loss_or_duplicates() {
    if std::env::var("DEBUG_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    }
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    // Snapshots often, so that the instance taking over a partition may
    // start its book from a snapshot the other one wrote.
    let instance = |name: &str| {
        let mut cfg = env.role_config("matcher", name);
        cfg.matcher.snapshot_every = 300;
        cfg
    };
    let a = tokio::spawn(orelink_matcher::run(instance("a"), env.reference.clone(), stop_a.clone()));
    let b = tokio::spawn(orelink_matcher::run(instance("b"), env.reference.clone(), stop_b.clone()));
    // Both processors in the group before the stream starts.
    let input = env.topic(topics::MARKET);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.group_assignment(&orelink_matcher::processor_group(&env.cfg), &input).await.is_none_or(|m| m.len() != 2) {
        assert!(tokio::time::Instant::now() < deadline, "the two processors never formed a stable group");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producing = {
        let codec = codec.clone();
        let env2 = env.clone();
        // Paced to last several seconds (~72 chunks of 200): long enough that
        // instance a's first commit is seen while events still arrive, now that
        // encoding no longer slows the producer down.
        tokio::spawn(async move { produce_workload(&env2, &codec, 200, 12_000, 7, Some(Duration::from_millis(120))).await })
    };
    // Stop one instance in the middle of the stream, once it has committed a
    // transaction of its own (not after a fixed time: how long the group takes
    // to settle varies): its partitions move to the other.
    wait_until_committed_by(&env, "a", Duration::from_secs(60)).await;
    let stopped_mid_stream = !producing.is_finished();
    stop_a.cancel();
    let a_stats = a.await.unwrap().expect("instance a stops cleanly");
    let produced = producing.await.unwrap();
    assert!(produced > 12_000);
    assert!(stopped_mid_stream, "instance a should stop while events still arrive");

    let groups = [
        (orelink_matcher::router_group(&env.cfg), vec![env.topic(topics::ORDERS), env.topic(topics::CAPACITY)]),
        (orelink_matcher::processor_group(&env.cfg), vec![env.topic(topics::MARKET)]),
    ];
    for (group, topics) in &groups {
        env.wait_caught_up(group, topics, Duration::from_secs(120)).await;
    }
    stop_b.cancel();
    let b_stats = b.await.unwrap().expect("instance b stops cleanly");
    // Both did real work: the partitions were shared, then handed over.
    assert!(a_stats.processor.transactions > 0 && a_stats.processor.events > 0, "instance a committed nothing: {a_stats:?}");
    assert!(b_stats.processor.transactions > 0 && b_stats.processor.events > 0, "instance b committed nothing: {b_stats:?}");

    let expected = expected_allocations(&env, &codec).await;
    let actual = actual_allocations(&env, &codec).await;
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total > 1_000, "the workload should allocate plenty, got {total}");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (family, want) in &expected {
        let got = &actual[family];
        assert_eq!(got.len(), want.len(), "{family}: {} written, {} expected", got.len(), want.len());
        assert!(got == want, "{family}: the allocations differ from the replay");
    }
}

/// A restarted matcher starts each book from its newest snapshot and replays
/// only the input after it; what it commits still equals a replay of the
/// whole input by a fresh engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_loads_the_newest_snapshot_and_replays_only_the_rest() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let mut cfg = env.role_config("matcher", "snap");
    cfg.matcher.snapshot_every = 200;
    let groups = [
        (orelink_matcher::router_group(&env.cfg), vec![env.topic(topics::ORDERS), env.topic(topics::CAPACITY)]),
        (orelink_matcher::processor_group(&env.cfg), vec![env.topic(topics::MARKET)]),
    ];

    let stop = CancellationToken::new();
    let first = tokio::spawn(orelink_matcher::run(cfg.clone(), env.reference.clone(), stop.clone()));
    produce_workload(&env, &codec, 200, 6_000, 21, None).await;
    for (group, topics) in &groups {
        env.wait_caught_up(group, topics, Duration::from_secs(120)).await;
    }
    stop.cancel();
    let first = first.await.unwrap().expect("the first run stops cleanly").processor;
    assert!(first.snapshots > 0, "no snapshot was published: {first:?}");
    assert!(env.written(topics::MATCHER_SNAPSHOTS).await > 0, "the snapshot topic is empty");

    // More input after the restart: each partition that gets some restores its book first.
    let stop = CancellationToken::new();
    let second = tokio::spawn(orelink_matcher::run(cfg, env.reference.clone(), stop.clone()));
    produce_workload(&env, &codec, 50, 1_000, 22, None).await;
    for (group, topics) in &groups {
        env.wait_caught_up(group, topics, Duration::from_secs(120)).await;
    }
    stop.cancel();
    let second = second.await.unwrap().expect("the second run stops cleanly").processor;
    assert!(second.restores > 0 && second.restores_from_snapshot == second.restores, "every book should start from a snapshot: {second:?}");
    // Without snapshots a restore replays everything the first run committed.
    assert!(second.replayed * 2 < first.events, "replayed {} of {} events", second.replayed, first.events);

    let expected = expected_allocations(&env, &codec).await;
    let actual = actual_allocations(&env, &codec).await;
    assert!(expected.values().map(Vec::len).sum::<usize>() > 500, "the workload should allocate plenty");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (family, want) in &expected {
        assert!(&actual[family] == want, "{family}: the allocations differ from a replay of the whole input");
    }
}

/// Waits until the processor group is stable with two members and the
/// committed offset of a partition assigned to `instance` has moved since:
/// only that instance can have committed it.
async fn wait_until_committed_by(env: &TestEnv, instance: &str, timeout: Duration) {
    let group = orelink_matcher::processor_group(&env.cfg);
    let topic = env.topic(topics::MARKET);
    let prefix = format!("{}-{instance}-", env.cfg.kafka.client_id);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut baseline: Option<(Vec<i32>, std::collections::BTreeMap<i32, i64>)> = None;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "instance {instance} committed nothing of its own within {timeout:?}");
        match env.group_assignment(&group, &topic).await {
            Some(members) if members.len() == 2 => {
                let mine = members.iter().find(|(client, _)| client.starts_with(&prefix)).map(|(_, p)| p.clone()).unwrap_or_default();
                let committed = env.committed(&group, &topic).await;
                match &baseline {
                    Some((parts, before)) if *parts == mine => {
                        if mine.iter().any(|p| committed.get(p).unwrap_or(&0) > before.get(p).unwrap_or(&0)) {
                            return;
                        }
                    }
                    _ => baseline = Some((mine, committed)),
                }
            }
            _ => baseline = None,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `orelink bench floor` on the real broker: every event of a short run,
/// flat out and warm-up included, comes through its transactional forwarder
/// (the bench refuses to report otherwise), and each measured one has a latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_transaction_floor_bench_forwards_every_event() {
    let env = TestEnv::new().await;
    let rep = orelink_bench::floor(&env.cfg, &env.reference, 2_000, 300, 2, &|_| {}).await.expect("floor bench");
    assert!(rep.ratio.is_some_and(|r| r > 0.0), "flat out, raw and forwarded: {rep:?}");
    assert_eq!(rep.events, 900, "one second of warm-up and two measured");
    assert_eq!(rep.latency.samples, 600);
    assert!(rep.transactions > 0);
    assert_eq!(rep.transaction.samples as u64, rep.transactions);
}

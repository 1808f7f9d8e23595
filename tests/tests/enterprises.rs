//! Enterprises with their own Kafka clients (contract v1.1), on the secured
//! stack with the principals `topology apply` makes: an enterprise writes its
//! ingest topic with an independent serializer (schema_registry_converter,
//! TopicRecordNameStrategy, logged in to the registry as itself), the
//! `enterprises` role (as its own principal, SIGKILLed and restarted
//! mid-stream) forwards exactly its own events once each and dead-letters the
//! rest (`IDENTITY` for another's order); the enterprise cannot write the
//! shared topics or another's ingest topic, and reads its own allocations only.

use orelink_codec::Record;
use orelink_domain::events::{CapacityKind, ErrorClass, OrderKind, wire};
use orelink_domain::topology::topics;
use orelink_platform::access_apply::read_users;
use orelink_tests::{KillOnDrop, TestEnv, orelink_bin};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PINGGUO: &str = "91451000MA5L0CHG10";
const DACHANG: &str = "91451200MA5L0HXT20";
const T0: i64 = 1_795_000_000_000;

fn order(n: u32, buyer: &str) -> wire::OrderEvent {
    wire::OrderEvent {
        event_id: format!("ent-order-{n:04}"),
        event_time: T0 + n as i64,
        order_id: format!("ENT-O-{n:04}"),
        kind: OrderKind::Placed,
        cluster: "baise".into(),
        buyer_id: buyer.into(),
        product_code: "AL2O3-SGA-AO-2".into(),
        quantity_kg: 100_000,
        deliver_by: T0 + 20 * 86_400_000,
        destination_site: "baise-pingguo-smelter".into(),
        max_price_cny_per_t: 1_000,
        allow_cross_cluster: false,
    }
}

fn capacity(n: u32) -> wire::CapacityEvent {
    wire::CapacityEvent {
        event_id: format!("ent-cap-{n:04}"),
        event_time: T0 + n as i64,
        capacity_id: format!("ENT-C-{n:04}"),
        kind: CapacityKind::Declared,
        cluster: "baise".into(),
        provider_id: PINGGUO.into(),
        site_id: "baise-pingguo-smelter".into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 500_000,
        available_from: T0,
        available_until: T0 + 30 * 86_400_000,
        price_cny_per_t: 99_000,
        min_lot_kg: 25_000,
        energy_kwh_per_t: Some(13_300),
    }
}

fn as_user(env: &TestEnv, user: &str, password: &str) -> ClientConfig {
    let mut c = env.client("enterprise");
    c.set("sasl.username", user).set("sasl.password", password).set("message.timeout.ms", "10000").set("log_level", "0");
    c
}

/// Whether `user` may write `topic`: the broker's answer to one record.
async fn may_write(config: &ClientConfig, topic: &str) -> bool {
    let p: FutureProducer = config.create().unwrap();
    p.send(FutureRecord::to(topic).key("k").payload(&b"x"[..]), Duration::from_secs(15)).await.is_ok()
}

/// The first message of `topic` read in `group`, or the error the broker answers.
fn read_first(config: &ClientConfig, group: &str, topic: &str, wait: Duration) -> Result<Vec<u8>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = config.clone().set("group.id", group).set("enable.auto.commit", "false").set("auto.offset.reset", "earliest").set("isolation.level", "read_committed").create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return Ok(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Err(rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OperationTimedOut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_publishes_its_own_events_only_and_reads_its_own_allocations() {
    let env = TestEnv::new().await;
    env.apply().await;
    let users = read_users(&env.principals_file()).unwrap();
    let login = |name: &str| {
        let user = format!("{}{name}", env.ns);
        let pw = users[&user].expose().to_owned();
        (user, pw)
    };
    let role = login("orelink-enterprises");
    let start = || {
        KillOnDrop(
            std::process::Command::new(orelink_bin())
                .args(["run", "enterprises"])
                .envs(env.process_env("enterprises-test"))
                .env("ORELINK__KAFKA__USERNAME", &role.0)
                .env("ORELINK__KAFKA__PASSWORD", &role.1)
                .env("ORELINK__LOG__LEVEL", "error")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("orelink run enterprises"),
        )
    };
    let mut door = start();

    // Pingguo's ERP: its own Kafka client and serializer, logged in as itself.
    let (p_user, p_pw) = login(&format!("enterprise-{PINGGUO}"));
    let pingguo = as_user(&env, &p_user, &p_pw);
    let registry = orelink_codec::registry_settings(&env.cfg.registry.url, Duration::from_secs(10), Some((&p_user, &p_pw))).unwrap();
    let serializer = AvroEncoder::new(registry);
    let ingest = env.topic(&topics::ingest(PINGGUO));
    let strategy = |record: &str| SubjectNameStrategy::TopicRecordNameStrategy(ingest.clone(), record.to_owned());
    let erp: FutureProducer = pingguo.clone().set("enable.idempotence", "true").create().unwrap();
    let send = |key: String, bytes: Vec<u8>| {
        let (erp, ingest) = (erp.clone(), ingest.clone());
        async move { erp.send(FutureRecord::to(&ingest).key(&key).payload(&bytes), Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the enterprise writes its own ingest topic") }
    };
    let mut own = Vec::new();
    for n in 0..120u32 {
        if n == 60 {
            // Mid-stream: some forwarded, some in a transaction.
            tokio::time::sleep(Duration::from_millis(300)).await;
            door.kill();
            door = start();
        }
        match n % 6 {
            // Another enterprise's order on Pingguo's topic.
            5 => {
                let o = order(n, DACHANG);
                send(o.order_id.clone(), serializer.encode_struct(&o, &strategy("orelink.v1.OrderEvent")).await.unwrap()).await;
            }
            // Not Avro at all.
            4 => {
                send(format!("junk-{n}"), b"not avro".to_vec()).await;
            }
            k if k % 2 == 0 => {
                let o = order(n, PINGGUO);
                own.push(o.event_id.clone());
                send(o.order_id.clone(), serializer.encode_struct(&o, &strategy("orelink.v1.OrderEvent")).await.unwrap()).await;
            }
            _ => {
                let c = capacity(n);
                own.push(c.event_id.clone());
                send(c.capacity_id.clone(), serializer.encode_struct(&c, &strategy("orelink.v1.CapacityEvent")).await.unwrap()).await;
            }
        }
    }
    env.wait_caught_up(&orelink_enterprises::group(&env.cfg), std::slice::from_ref(&ingest), Duration::from_secs(120)).await;

    // Exactly its own events, once each, re-keyed by family, on the market topic.
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    {
        let topic = env.topic(topics::MARKET);
        for m in env.read_topic(&topic).await {
            let (id, family) = match codec.decode(&topic, m.payload()).await.unwrap() {
                Record::Order(o) => (o.event_id.to_string(), o.product.family_str().to_owned()),
                Record::Capacity(c) => (c.event_id.to_string(), c.product.family_str().to_owned()),
                other => panic!("{other:?}"),
            };
            assert_eq!(m.key(), Some(family.as_bytes()), "keyed by family");
            *seen.entry(id).or_default() += 1;
        }
    }
    own.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), own, "forwarded: exactly Pingguo's own events");
    assert!(seen.values().all(|n| *n == 1), "forwarded twice: {seen:?}");
    let dlq = env.topic(topics::DLQ);
    let mut letters: BTreeMap<(i32, i64), (ErrorClass, String)> = BTreeMap::new();
    for m in env.read_topic(&dlq).await {
        let Record::DeadLetter(d) = codec.decode(&dlq, m.payload()).await.unwrap() else { panic!("not a dead letter") };
        assert_eq!((d.source_topic.as_str(), d.role.as_str()), (ingest.as_str(), "enterprises"));
        assert!(letters.insert((d.source_partition, d.source_offset), (d.error_class, d.reason)).is_none(), "a dead letter twice");
    }
    let identity = letters.values().filter(|(c, _)| *c == ErrorClass::Identity).collect::<Vec<_>>();
    assert_eq!(identity.len(), 20, "Dachang's orders on Pingguo's topic: {letters:?}");
    assert!(identity.iter().all(|(_, r)| r.contains(DACHANG)), "{identity:?}");
    assert_eq!(letters.values().filter(|(c, _)| *c == ErrorClass::Undecodable).count(), 20, "junk: {letters:?}");

    // What its principal may not do.
    assert!(!may_write(&pingguo, &env.topic(topics::ORDERS)).await, "Pingguo wrote the shared orders topic");
    assert!(!may_write(&pingguo, &env.topic(topics::MARKET)).await, "Pingguo wrote the market topic");
    assert!(!may_write(&pingguo, &env.topic(topics::SHARED_ORDERS)).await, "Pingguo wrote the shared-orders topic");
    assert!(!may_write(&pingguo, &env.topic(&topics::ingest(DACHANG))).await, "Pingguo wrote Dachang's ingest topic");

    // An allocation with Dachang buying from Pingguo reaches both, and only them.
    let allocations = env.topic(topics::ALLOCATIONS);
    let a = wire::Allocation {
        allocation_id: "ENT-A-1".into(),
        order_id: "ENT-O-X".into(),
        capacity_id: "ENT-C-0001".into(),
        order_cluster: "hechi".into(),
        capacity_cluster: "baise".into(),
        buyer_id: DACHANG.into(),
        provider_id: PINGGUO.into(),
        product_code: "AL-INGOT-AL99.70".into(),
        quantity_kg: 50_000,
        price_cny_per_t: 19_800,
        freight_cny_per_t: 310,
        from_site: "baise-pingguo-smelter".into(),
        destination_site: "hechi-dachang-tin".into(),
        decided_at: T0,
        explanation: wire::Explanation {
            rank: 1,
            home_cluster: false,
            requested_product_code: "AL-INGOT-AL99.70".into(),
            landed_cost_cny_per_t: 20_110,
            distance_km: 260,
            transit_hours: 8,
            mode: orelink_domain::TransportMode::Road,
            energy_kwh_per_t: Some(13_300),
            summary: "test".into(),
        },
        pick_up: None, deliver_by: None,
    };
    env.produce(&allocations, "AL-INGOT", &codec.encode(&allocations, &a).await.unwrap()).await;
    let mine = env.topic(&topics::enterprise_allocations(PINGGUO));
    let group = env.topic(&format!("{}erp", orelink_domain::access::enterprise_group_prefix(PINGGUO)));
    let (cfg, mine2, group2) = (pingguo.clone(), mine.clone(), group.clone());
    let got = tokio::task::spawn_blocking(move || read_first(&cfg, &group2, &mine2, Duration::from_secs(30))).await.unwrap().expect("Pingguo reads its allocations");
    match codec.decode(&mine, Some(&got)).await.unwrap() {
        Record::Allocation(x) => assert_eq!(x.allocation_id, "ENT-A-1"),
        other => panic!("{other:?}"),
    }
    let theirs = env.topic(&topics::enterprise_allocations(DACHANG));
    assert_eq!(env.read_topic(&theirs).await.len(), 1, "Dachang gets its copy");
    let (cfg, group2) = (pingguo.clone(), group.clone());
    let denied = tokio::task::spawn_blocking(move || read_first(&cfg, &group2, &theirs, Duration::from_secs(10))).await.unwrap();
    assert!(denied.is_err(), "Pingguo read Dachang's allocations");
    let third = env.topic(&topics::enterprise_allocations("91450600MA5L0JCY36"));
    assert!(env.read_topic(&third).await.is_empty(), "an allocation naming neither is not copied there");
    door.kill();
}

//! Poison input through the consume loop every role shares.

use orelink_codec::Record;
use orelink_domain::events::{ErrorClass, wire};
use orelink_domain::topology::topics;
use orelink_platform::consume::{Backoff, ConsumeLoop, Done, HandleError, Handler, Inbound, loop_consumer};
use orelink_platform::dlq::DeadLetters;
use orelink_tests::{TestEnv, order_wire, read_n};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Collects what the role receives and stops the loop after `want` events.
struct Collect {
    got: Vec<Inbound>,
    want: usize,
    cancel: CancellationToken,
}

impl Handler for Collect {
    type Later = orelink_platform::consume::Pending;

    async fn handle(&mut self, event: Inbound) -> Result<Done, HandleError> {
        self.got.push(event);
        if self.got.len() >= self.want {
            self.cancel.cancel();
        }
        Ok(Done::Now)
    }
}

#[tokio::test]
async fn poison_goes_to_the_dlq_and_the_good_record_behind_it_is_delivered() {
    let env = TestEnv::new().await;
    env.apply().await;
    let orders = env.topic(topics::ORDERS);
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();

    // 1. not Confluent wire format at all
    let garbage = b"{\"order\": \"20t Al, by Friday\"}".to_vec();
    // 2. wire format, but a schema id the registry never issued
    let unknown_id = vec![0, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6];
    // 3. a valid Avro order naming a grade the catalog does not have
    let mut bad_product = order_wire(1);
    bad_product.product_code = "AL-INGOT-AL99.99".into();
    let bad_product = codec.encode(&orders, &bad_product).await.unwrap();
    // 4. a valid record of the wrong kind on this topic (a capacity on the orders topic)
    let dead_letter_on_orders = {
        let dl = wire::DeadLetter {
            source_topic: "x".into(), source_partition: 0, source_offset: 0, key: None, value: None,
            error_class: ErrorClass::Invalid, reason: "r".into(), failed_at: 1_795_000_000_000, role: "t".into(),
        };
        codec.encode(&env.topic(topics::DLQ), &dl).await.unwrap()
    };
    // 5. the good one, behind all of them on the same partition
    let good = order_wire(2);
    let good_bytes = codec.encode(&orders, &good).await.unwrap();
    for value in [&garbage, &unknown_id, &bad_product, &dead_letter_on_orders, &good_bytes] {
        env.produce(&orders, "AL-INGOT", value).await;
    }

    let consumer = loop_consumer(&env.cfg.kafka.consumer_config("test-role", &format!("{}role", env.ns)), &[&orders], None).unwrap();
    let producer = env.producer();
    let dead = DeadLetters::new(producer, codec.clone(), "test-role");
    let cancel = CancellationToken::new();
    let mut handler = Collect { got: vec![], want: 1, cancel: cancel.clone() };
    let run = ConsumeLoop::new(consumer, codec.clone(), dead, Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) })
        .run(&mut handler, cancel.clone());
    let stats = tokio::time::timeout(Duration::from_secs(60), run).await.expect("loop finished").expect("loop ok");

    assert_eq!(stats.dead_lettered, 4, "{stats:?}");
    assert_eq!(stats.delivered, 1);
    match &handler.got[0].record {
        Some(Record::Order(o)) => {
            assert_eq!(o.to_wire(), good);
            assert_eq!(o.product.family_str(), "AL-INGOT");
        }
        other => panic!("expected the good order, got {other:?}"),
    }

    let letters = read_n(env.consumer(&env.topic(topics::DLQ)), 4, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 4);
    let mut seen = Vec::new();
    for (key, value) in letters {
        assert_eq!(key.as_deref(), Some(orders.as_bytes()), "DLQ key is the source topic");
        let Record::DeadLetter(dl) = codec.decode(&env.topic(topics::DLQ), value.as_deref()).await.unwrap() else { panic!("not a dead letter") };
        assert_eq!(dl.source_topic, orders);
        assert_eq!(dl.role, "test-role");
        assert!(!dl.reason.is_empty());
        seen.push((dl.source_offset, dl.error_class, dl.value.clone().unwrap(), dl.reason));
    }
    seen.sort_by_key(|s| s.0);
    let classes: Vec<ErrorClass> = seen.iter().map(|s| s.1).collect();
    assert_eq!(classes, [ErrorClass::Undecodable, ErrorClass::UnknownSchema, ErrorClass::UnknownReference, ErrorClass::WrongRecord]);
    // The raw bytes are kept unchanged, so nothing is lost.
    assert_eq!(seen[0].2, garbage);
    assert_eq!(seen[1].2, unknown_id);
    assert_eq!(seen[2].2, bad_product);
    assert!(seen[0].3.contains("magic byte"), "{}", seen[0].3);
    assert!(seen[2].3.contains("AL99.99"), "{}", seen[2].3);
    assert!(seen[3].3.contains("DeadLetter"), "{}", seen[3].3);
}

/// A handler whose output delivery fails: the loop stops, and neither that
/// event's offset nor any later one is committed, so a restart reads it again.
struct FailSecond {
    seen: usize,
}

impl Handler for FailSecond {
    type Later = orelink_platform::consume::Pending;

    async fn handle(&mut self, _event: Inbound) -> Result<Done, HandleError> {
        self.seen += 1;
        let fail = self.seen == 2;
        Ok(Done::Later(Box::pin(async move {
            if fail { Err(HandleError::Fatal("delivery failed".into())) } else { Ok(()) }
        })))
    }
}

#[tokio::test]
async fn a_failed_delivery_is_not_committed() {
    use rdkafka::consumer::Consumer;
    let env = TestEnv::new().await;
    env.apply().await;
    let orders = env.topic(topics::ORDERS);
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    for n in 0..5 {
        env.produce(&orders, "AL-INGOT", &codec.encode(&orders, &order_wire(100 + n)).await.unwrap()).await;
    }
    let group = format!("{}failing", env.ns);
    let consumer = loop_consumer(&env.cfg.kafka.consumer_config("test-role", &group), &[&orders], None).unwrap();
    let dead = DeadLetters::new(env.producer(), codec.clone(), "test-role");
    let mut handler = FailSecond { seen: 0 };
    let run = ConsumeLoop::new(consumer, codec, dead, Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) })
        .run(&mut handler, CancellationToken::new());
    let result = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the loop stops");
    assert!(result.is_err(), "a failed delivery must stop the loop");

    // Committed: at most the first event (offset 1), never past the failed second one.
    let probe: rdkafka::consumer::BaseConsumer = env.client("probe").set("group.id", &group).create().unwrap();
    let orders2 = orders.clone();
    let committed = tokio::task::spawn_blocking(move || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition(&orders2, p);
        }
        probe.committed_offsets(tpl, Duration::from_secs(10)).unwrap()
    })
    .await
    .unwrap();
    for e in committed.elements() {
        if let rdkafka::Offset::Offset(o) = e.offset() {
            assert!(o <= 1, "partition {} committed up to {o}, past the failed event", e.partition());
        }
    }
}

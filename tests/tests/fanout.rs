//! The fanout role as a real process, SIGKILLed mid-stream and restarted:
//! every shipment event reaches its carrier partner's topic exactly once, in
//! order per shipment, and no other partner's; a carrier that is no partner
//! goes to the DLQ, once. The restarted instance, the same static member of
//! its group, catches up well inside the 45 s member timeout its predecessor held it for.

use orelink_codec::Record;
use orelink_domain::events::{ErrorClass, ShipmentStatus, wire};
use orelink_domain::topology::topics;
use orelink_domain::TransportMode;
use orelink_tests::{KillOnDrop, TestEnv, orelink_bin};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

const BEIBU: (&str, &str) = ("beibu-gulf-logistics", "91450600MA5L0BGL1P");
const RAIL: (&str, &str) = ("gx-rail-freight", "91450100MA5L0RLF3K");
/// A well-formed credit code that no partner carries.
const STRANGER: &str = "91450100MA5L0ABC1X";

fn start(env: &TestEnv) -> KillOnDrop {
    KillOnDrop(Command::new(orelink_bin())
        .args(["run", "fanout"])
        .envs(env.process_env("fanout-crash"))
        .env("ORELINK__LOG__LEVEL", "error")
        // Kafka's default: a restart that waited for its dead predecessor to
        // time out would stall 45 s, far from what the test allows.
        .env("ORELINK__KAFKA__SESSION_TIMEOUT_MS", "45000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("orelink run fanout starts"))
}

fn shipment(n: u32) -> wire::ShipmentEvent {
    let carrier = match n % 7 {
        0 => STRANGER,
        k if k % 2 == 0 => BEIBU.1,
        _ => RAIL.1,
    };
    wire::ShipmentEvent {
        event_id: format!("shp-evt-{n:05}"),
        event_time: 1_795_000_000_000 + n as i64 * 1000,
        shipment_id: format!("SHP-{:03}", n % 20),
        allocation_id: None,
        carrier_id: carrier.into(),
        mode: TransportMode::Rail,
        status: ShipmentStatus::InTransit,
        from_site: "fcg-qisha-copper".into(),
        to_site: "nanning-niuwan-port".into(),
        quantity_kg: 500_000,
        lat: None,
        lon: None,
        eta: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_routes_every_shipment_once_to_its_own_partner() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let input = env.topic(topics::SHIPMENTS);
    let producer = env.producer();
    let mut fanout = start(&env);
    let mut restarted = None;
    for n in 0..300u32 {
        let s = shipment(n);
        let bytes = codec.encode(&input, &s).await.unwrap();
        producer.send(rdkafka::producer::FutureRecord::to(&input).key(&s.shipment_id).payload(&bytes), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        if n == 150 {
            // Mid-stream: some of it routed, some in flight.
            tokio::time::sleep(Duration::from_millis(300)).await;
            fanout.kill();
            fanout = start(&env);
            restarted = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    env.wait_caught_up(&orelink_fanout::group(&env.cfg), std::slice::from_ref(&input), Duration::from_secs(120)).await;
    let resumed = restarted.expect("restarted mid-stream").elapsed();
    assert!(resumed < Duration::from_secs(20), "caught up {resumed:?} after the restart (the member timeout is 45 s)");

    for (partner, carrier) in [BEIBU, RAIL] {
        let topic = env.topic(&topics::partner(partner));
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut per_shipment: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for m in env.read_topic(&topic).await {
            let Record::Shipment(s) = codec.decode(&topic, m.payload()).await.unwrap() else { panic!("not a shipment") };
            assert_eq!(s.carrier_id.as_str(), carrier, "{partner} received another carrier's shipment");
            assert_eq!(m.key(), Some(s.shipment_id.as_str().as_bytes()));
            *seen.entry(s.event_id.to_string()).or_default() += 1;
            per_shipment.entry(s.shipment_id.to_string()).or_default().push(s.event_time.0);
        }
        let expected: Vec<String> = (0..300).map(shipment).filter(|s| s.carrier_id == carrier).map(|s| s.event_id).collect();
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), { let mut e = expected.clone(); e.sort(); e }, "{partner}: missing or foreign events");
        assert!(seen.values().all(|c| *c == 1), "{partner}: duplicates {seen:?}");
        for (id, times) in per_shipment {
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{partner}: {id} out of order");
        }
    }
    let dlq = env.topic(topics::DLQ);
    let mut strangers = BTreeMap::new();
    for m in env.read_topic(&dlq).await {
        let Record::DeadLetter(d) = codec.decode(&dlq, m.payload()).await.unwrap() else { panic!("not a dead letter") };
        assert_eq!(d.error_class, ErrorClass::UnknownReference, "{}", d.reason);
        *strangers.entry((d.source_partition, d.source_offset)).or_insert(0) += 1;
    }
    assert_eq!(strangers.len(), (0..300).filter(|n| n % 7 == 0).count(), "unknown carriers dead-lettered");
    assert!(strangers.values().all(|c| *c == 1), "a dead letter twice");
    fanout.kill();
}

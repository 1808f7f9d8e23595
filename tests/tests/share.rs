//! Cross-cluster sharing on the real stack: the matcher and the share role run
//! together, as `orelink run all` runs them.

use orelink_codec::{Codec, Record};
use orelink_domain::events::{CapacityKind, OrderKind, OrderState, SharedOrderKind, wire};
use orelink_domain::topology::topics;
use orelink_tests::TestEnv;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOUR: i64 = 3_600_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[allow(clippy::too_many_arguments)]
fn order(id: &str, at: i64, cluster: &str, product: &str, dest: &str, kg: i64, max: i64, cross: bool) -> wire::OrderEvent {
    wire::OrderEvent {
        event_id: format!("evt-{id}"),
        event_time: at,
        order_id: id.into(),
        kind: OrderKind::Placed,
        cluster: cluster.into(),
        buyer_id: "91450100MA5L0ABC1X".into(),
        product_code: product.into(),
        quantity_kg: kg,
        deliver_by: at + 240 * HOUR,
        destination_site: dest.into(),
        max_price_cny_per_t: max,
        allow_cross_cluster: cross,
    }
}

struct Topics<'a> {
    env: &'a TestEnv,
    codec: &'a Codec,
}

impl Topics<'_> {
    async fn send_order(&self, o: &wire::OrderEvent) {
        let t = self.env.topic(topics::ORDERS);
        let family = o.product_code.rsplit_once('-').unwrap().0.to_owned();
        self.env.produce(&t, &family, &self.codec.encode(&t, o).await.unwrap()).await;
    }

    async fn records(&self, contract: &str) -> Vec<Record> {
        let t = self.env.topic(contract);
        let mut out = Vec::new();
        for m in self.env.read_topic(&t).await {
            use rdkafka::Message;
            out.push(self.codec.decode(&t, m.payload()).await.unwrap());
        }
        out
    }

    async fn shared(&self) -> Vec<orelink_domain::events::SharedOrder> {
        self.records(topics::SHARED_ORDERS).await.into_iter().filter_map(|r| if let Record::SharedOrder(s) = r { Some(s) } else { None }).collect()
    }

    async fn statuses(&self) -> Vec<wire::OrderStatus> {
        self.records(topics::ORDER_STATUS).await.into_iter().filter_map(|r| if let Record::OrderStatus(s) = r { Some(s) } else { None }).collect()
    }

    async fn allocations(&self) -> Vec<wire::Allocation> {
        self.records(topics::ALLOCATIONS).await.into_iter().filter_map(|r| if let Record::Allocation(a) = r { Some(a) } else { None }).collect()
    }
}

/// Polls `check` until it is true, or panics with `what` after a minute.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remainders_are_shared_by_policy_filled_across_clusters_and_withdrawn() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let t = Topics { env: &env, codec: &codec };
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "share-test"), env.reference.clone(), cancel.clone()));
    let share = {
        let (cfg, r, c) = (env.as_role("share"), env.reference.clone(), cancel.clone());
        tokio::spawn(async move { orelink_share::run(&cfg, &r, c).await })
    };

    // Baise declares aluminium; Nanning, the consumer hub, has none of its own.
    let past = now_ms() - HOUR;
    let cap = wire::CapacityEvent {
        event_id: "evt-cap-baise".into(),
        event_time: past - HOUR,
        capacity_id: "CAP-BAISE-1".into(),
        kind: CapacityKind::Declared,
        cluster: "baise".into(),
        provider_id: "91451000MA5L0PRV1Y".into(),
        site_id: "baise-pingguo-smelter".into(),
        product_code: "AL-INGOT-AL99.85".into(),
        quantity_kg: 2_000_000,
        available_from: past - HOUR,
        available_until: past + 2_000 * HOUR,
        price_cny_per_t: 19_000,
        min_lot_kg: 25_000,
        energy_kwh_per_t: Some(13_150),
    };
    let ct = env.topic(topics::CAPACITY);
    env.produce(&ct, "AL-INGOT", &codec.encode(&ct, &cap).await.unwrap()).await;
    // Nanning orders: one that allows cross-cluster filling, one that does not.
    let cross = order("ORD-NN-CROSS", past, "nanning", "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 250_000, 21_500, true);
    let home_only = order("ORD-NN-HOME", past, "nanning", "AL-INGOT-AL99.70", "nanning-jiangnan-processing", 250_000, 21_500, false);
    t.send_order(&home_only).await;
    t.send_order(&cross).await;
    // A Hechi antimony order nobody can fill: Hechi's policy reveals the price cap, not the buyer.
    let hechi = order("ORD-HC-SB", past, "hechi", "SB-INGOT-SB99.65", "hechi-yizhou-processing", 100_000, 95_000, true);
    t.send_order(&hechi).await;

    eventually("the cross-cluster order is filled from Baise", async || t.allocations().await.iter().any(|a| a.order_id == "ORD-NN-CROSS")).await;
    let allocs = t.allocations().await;
    let a: Vec<_> = allocs.iter().filter(|a| a.order_id == "ORD-NN-CROSS").collect();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0].capacity_cluster.as_str(), a[0].order_cluster.as_str(), a[0].quantity_kg), ("baise", "nanning", 250_000));
    assert!(!a[0].explanation.home_cluster);
    assert!(a[0].explanation.summary.contains("shared"), "{}", a[0].explanation.summary);

    eventually("the filled order's share is withdrawn", async || {
        t.shared().await.iter().any(|s| s.order_id.as_str() == "ORD-NN-CROSS" && s.kind == SharedOrderKind::Withdrawn)
    })
    .await;
    eventually("the Hechi order is shared", async || t.shared().await.iter().any(|s| s.order_id.as_str() == "ORD-HC-SB")).await;

    let shared = t.shared().await;
    // Nanning's policy: at once, to every other cluster, naming the buyer, hiding the cap.
    let s = shared.iter().find(|s| s.order_id.as_str() == "ORD-NN-CROSS" && s.kind == SharedOrderKind::Shared).expect("shared");
    let targets: Vec<&str> = s.target_clusters.iter().map(|c| c.as_str()).collect();
    assert_eq!(targets, ["baise", "hechi", "fangchenggang"]);
    assert_eq!(s.origin_cluster.as_str(), "nanning");
    assert_eq!(s.buyer_id.as_ref().map(|b| b.as_str()), Some("91450100MA5L0ABC1X"));
    assert_eq!(s.max_price, None, "the price cap is hidden");
    assert_eq!(s.remaining.to_wire(), 250_000);
    // Hechi's policy: the cap is visible, the buyer is not.
    let h = shared.iter().find(|s| s.order_id.as_str() == "ORD-HC-SB").unwrap();
    assert_eq!((h.buyer_id.as_ref(), h.max_price.map(|p| p.to_wire())), (None, Some(95_000)));
    assert_eq!(h.shared_at.0, past + 15 * 60_000, "shared when its 15-minute delay ran out, in event time");

    // The order that does not allow it: never shared, never filled, still open at home.
    assert!(shared.iter().all(|s| s.order_id.as_str() != "ORD-NN-HOME"), "a home-only order was shared");
    assert!(allocs.iter().all(|a| a.order_id != "ORD-NN-HOME"), "a home-only order was filled");
    let last = t.statuses().await.into_iter().filter(|s| s.order_id == "ORD-NN-HOME").max_by_key(|s| s.version).expect("a status");
    assert_eq!((last.state, last.remaining_kg, last.shared_to.len()), (OrderState::Open, 250_000, 0));

    cancel.cancel();
    matcher.await.unwrap().expect("matcher stops cleanly");
    let stats = share.await.unwrap().expect("share role stops cleanly");
    assert!(stats.shared >= 2 && stats.withdrawn >= 1, "{stats:?}");
}

/// A delay runs on event time when the stream is ahead of the wall clock (a
/// replay, a simulation): a later status moves the clock and the share fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delayed_share_fires_when_event_time_passes_its_due_time() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let t = Topics { env: &env, codec: &codec };
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "share-delay"), env.reference.clone(), cancel.clone()));
    let share = {
        let (cfg, r, c) = (env.as_role("share"), env.reference.clone(), cancel.clone());
        tokio::spawn(async move { orelink_share::run(&cfg, &r, c).await })
    };
    // Hechi delays 15 minutes. Both orders lie ahead of the wall clock.
    let ahead = now_ms() + 24 * HOUR;
    let first = order("ORD-HC-1", ahead, "hechi", "SB-INGOT-SB99.65", "hechi-yizhou-processing", 100_000, 95_000, true);
    let second = order("ORD-HC-2", ahead + 20 * 60_000, "hechi", "SB-INGOT-SB99.65", "hechi-yizhou-processing", 100_000, 95_000, true);
    t.send_order(&first).await;
    // The first status alone does not make its share due.
    eventually("the first order's status", async || t.statuses().await.iter().any(|s| s.order_id == "ORD-HC-1")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(t.shared().await.is_empty(), "shared before its delay ran out");
    // Twenty minutes later in event time: the first is due, the second is not.
    t.send_order(&second).await;
    eventually("the first order is shared", async || t.shared().await.iter().any(|s| s.order_id.as_str() == "ORD-HC-1")).await;
    let shared = t.shared().await;
    assert_eq!(shared.len(), 1, "only the first is due: {shared:?}");
    assert_eq!(shared[0].shared_at.0, ahead + 15 * 60_000);

    // Stopping abandons the second order's share unstored: the next run shares it.
    cancel.cancel();
    matcher.await.unwrap().expect("matcher stops cleanly");
    share.await.unwrap().expect("share role stops cleanly");
    assert!(!env.caught_up(&orelink_share::group(&env.cfg), &[env.topic(topics::ORDER_STATUS)]).await, "the pending share's status was committed");
}

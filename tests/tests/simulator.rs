//! The simulator against a running matcher: its orders and capacity turn into
//! allocations, and its malformed events into dead letters.

use orelink_domain::topology::topics;
use orelink_tests::TestEnv;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_workload_is_matched_and_its_poison_dead_lettered() {
    let env = TestEnv::new().await;
    env.apply().await;
    let cancel = CancellationToken::new();
    let matcher = tokio::spawn(orelink_matcher::run(env.role_config("matcher", "sim"), env.reference.clone(), cancel.clone()));
    let stats = orelink_simulator::run(&env.cfg, &env.reference, 2026, 1_796_083_200_000, 1_000, Duration::from_secs(4), CancellationToken::new())
        .await
        .expect("the simulator runs");
    assert!(stats.events > 2_000 && stats.malformed > 0, "{stats:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut allocations, mut dead) = (0, 0);
    while tokio::time::Instant::now() < deadline {
        allocations = env.written(topics::ALLOCATIONS).await;
        dead = env.written(topics::DLQ).await;
        // Malformed orders and capacity pass the matcher's router; inventory and
        // shipments have no consumer yet, so their poison stays where it is.
        if allocations > 0 && dead > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cancel.cancel();
    matcher.await.unwrap().expect("the matcher stops cleanly");
    assert!(allocations > 0, "no allocations from {} simulated events", stats.events);
    assert!(dead > 0, "no dead letters from {} malformed events", stats.malformed);
}

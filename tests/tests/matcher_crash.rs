//! The matcher killed with SIGKILL in the middle of a stream, then restarted:
//! a read_committed reader of the allocations sees exactly what a pure-engine
//! replay of the market topic (in commit order) produces. The restarted
//! matcher commits again within seconds (a static member of its groups, it
//! does not wait out its predecessor's member timeout). The restarted
//! matcher usually starts its books from snapshots taken before the kill.

use orelink_domain::topology::topics;
use orelink_tests::{TestEnv, actual_allocations, expected_allocations, produce_workload};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn orelink_binary() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/orelink
    let bin = orelink_tests::orelink_bin();
    assert!(bin.exists(), "{} is missing: build the workspace first (tests/run does)", bin.display());
    bin
}

fn start(env: &TestEnv, log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(orelink_binary())
        .args(["run", "matcher"])
        .envs(env.process_env("crash"))
        // Snapshots often enough that the restart usually starts from them: the
        // replay after a snapshot must give what a replay from the start gives.
        .env("ORELINK__MATCHER__SNAPSHOT_EVERY", "100")
        // Kafka's default: a restart that waited for its dead predecessor to
        // time out would stall 45 s, far from what the test allows.
        .env("ORELINK__KAFKA__SESSION_TIMEOUT_MS", "45000")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("orelink starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_and_doubles_nothing() {
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let log = std::env::temp_dir().join(format!("orelink-crash-{}.log", env.ns.trim_end_matches('.')));

    let mut matcher = start(&env, &log);
    let producing = {
        let (codec, env2) = (codec.clone(), env.clone());
        tokio::spawn(async move { produce_workload(&env2, &codec, 200, 6_000, 11, Some(Duration::from_millis(60))).await })
    };

    // Kill it once it has committed some allocations and while input is still arriving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.written(topics::ALLOCATIONS).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no allocations before the kill; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!producing.is_finished(), "the kill must happen mid-stream");
    matcher.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    matcher.wait().unwrap();
    let at_kill = env.written(topics::ALLOCATIONS).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let allocations = env.topic(topics::ALLOCATIONS);
    let before = env.read_topic(&allocations).await.len();
    let restarted = std::time::Instant::now();
    let mut matcher = start(&env, &log);
    // The restarted instance is the same static member of its groups: it takes
    // its partitions back at once instead of waiting for the dead one to time out.
    while env.read_topic(&allocations).await.len() == before {
        assert!(restarted.elapsed() < Duration::from_secs(20), "no allocation committed within 20 s of the restart (the member timeout is 45 s); see {}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("matcher_crash: first allocation committed {:.1} s after the restart", restarted.elapsed().as_secs_f64());
    producing.await.unwrap();
    let groups = [
        (orelink_matcher::router_group(&env.cfg), vec![env.topic(topics::ORDERS), env.topic(topics::CAPACITY)]),
        (orelink_matcher::processor_group(&env.cfg), vec![env.topic(topics::MARKET)]),
    ];
    for (group, topics) in &groups {
        env.wait_caught_up(group, topics, Duration::from_secs(120)).await;
    }
    // Graceful stop: SIGTERM, drain, commit, exit 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(matcher.id() as libc::pid_t, libc::SIGTERM) };
    let status = matcher.wait().unwrap();
    assert!(status.success(), "the restarted matcher did not exit cleanly ({status}); see {}", log.display());

    let expected = expected_allocations(&env, &codec).await;
    let actual = actual_allocations(&env, &codec).await;
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total as i64 > at_kill.max(1), "work continued after the restart: {total} allocations, {at_kill} offsets at the kill");
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (family, want) in &expected {
        let got = &actual[family];
        assert_eq!(got.len(), want.len(), "{family}: {} committed, {} expected", got.len(), want.len());
        assert!(got == want, "{family}: committed allocations differ from the replay");
    }
    let _ = std::fs::remove_file(&log);
}

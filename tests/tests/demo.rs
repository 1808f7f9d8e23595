//! `orelink demo` driven for a bounded time as a real process: allocations, shared
//! orders and dead letters come out, and it exits cleanly leaving nothing behind.

use orelink_tests::TestEnv;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_matches_dead_letters_and_stops_cleanly() {
    let env = TestEnv::new().await;
    let marker = format!("ORELINK__NAMESPACE={}", env.ns);
    let bin = orelink_tests::orelink_bin();
    assert!(bin.exists(), "{} is missing: build the workspace first (tests/run does)", bin.display());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["demo", "--duration", "8s", "--rate", "400"])
            .envs(env.process_env("demo-test"))
            .env("RUST_LOG", "error")
            // Any free port: the demo prints where the dashboard is.
            .env("ORELINK__VIEW__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .output()
            .expect("orelink demo runs")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "demo failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("allocations") && stdout.lines().count() >= 3, "no live table:\n{stdout}");
    let dashboard = stderr.lines().find(|l| l.contains("[demo] dashboard: http://127.0.0.1:")).unwrap_or_else(|| panic!("no dashboard URL:\n{stderr}"));
    assert!(dashboard.contains("/?token="), "{dashboard}");
    let done = stderr.lines().find(|l| l.contains("[demo] done:")).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    let numbers: Vec<u64> = done.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    // "done: N events simulated (M malformed), A allocations committed by the matcher,
    //  S orders shared across clusters and W shares withdrawn, D dead letters; V events applied to the operators' view;
    //  P shipments planned by the booker on carriers' offers (B booking records, unbooked remainders included;
    //  read back: K parts booked, U t unbooked); R shipments routed to their carriers"
    let [events, malformed, allocations, shared, _withdrawn, dead, view, planned, bookings, _booked, _unbooked_t, routed] = numbers[..] else { panic!("unexpected summary: {done}") };
    assert!(bookings > 0 && bookings >= planned, "the booker booked nothing: {done}");
    assert!(stdout.lines().next().is_some_and(|h| h.contains("booked") && h.contains("unbooked t")), "no booking columns:\n{stdout}");
    assert!(routed > 0, "no shipment reached a partner: {done}");
    assert!(view > 0, "the view applied nothing: {done}");
    assert!(events > 1_000 && malformed > 0, "{done}");
    assert!(allocations > 0, "no allocations: {done}");
    assert!(shared > 0, "no orders shared: {done}");
    assert!(dead > 0, "no dead letters: {done}");
    // No process with this test's environment is left: the demo exited and
    // started none of its own (the stack was already up).
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
        .filter(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        .count();
    assert_eq!(left, 0, "a process of this test's demo is still running");
}

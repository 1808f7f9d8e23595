//! A newcomer's first run: `orelink demo` on a machine where the stack was
//! never made (its own `ORELINK_HOME` and ports, beside the tests' stack) brings
//! the stack up, matches, and exits 0; `stack down --purge` then leaves nothing
//! running. Kafka's jars come from the shared cache, so no download is repeated.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the demo (stack up, a 15 s run, a clean stop) may take before it
/// counts as hung; far more than it takes on a loaded machine.
const DEMO_DEADLINE: Duration = Duration::from_secs(300);

/// `orelink <args>` as a newcomer runs it: none of the developer's settings,
/// this stack's home and ports. A run that outlives `deadline` is stopped
/// (SIGINT, then SIGKILL) and fails the test with what it printed, so a hang
/// names its stage instead of stalling the suite.
fn orelink(home: &Path, ports: [u16; 4], args: &[&str], deadline: Duration) -> Output {
    let mut cmd = Command::new(orelink_tests::orelink_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORELINK")) {
        cmd.env_remove(k);
    }
    for ((var, _), port) in orelink_stack::PORT_VARS.iter().zip(ports) {
        cmd.env(var, port.to_string());
    }
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = cmd
        .args(args)
        .env("ORELINK_HOME", home)
        .env("ORELINK__VIEW__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("orelink runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    match status {
        Some(status) => Output { status, stdout: read(&out_path), stderr: read(&err_path) },
        None => {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let stopped = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                child.try_wait().unwrap().is_some()
            });
            if !stopped {
                let _ = child.kill();
                let _ = child.wait();
            }
            // The stack the demo brought up goes too (not again if this was the stack's own stop).
            if args.first() != Some(&"stack") {
                let _ = orelink_down(home, ports);
            }
            panic!(
                "`orelink {}` did not end within {deadline:?} (after SIGINT it {}):\n{}\n{}",
                args.join(" "),
                if stopped { "stopped" } else { "had to be killed" },
                String::from_utf8_lossy(&read(&out_path)),
                String::from_utf8_lossy(&read(&err_path))
            );
        }
    }
}

/// `orelink stack down --purge` for this stack.
fn orelink_down(home: &Path, ports: [u16; 4]) -> Output {
    orelink(home, ports, &["stack", "down", "--purge"], Duration::from_secs(120))
}

/// Processes whose environment names this home (the stack's own, the demo).
fn processes_of(home: &Path) -> usize {
    let marker = format!("ORELINK_HOME={}", home.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
        .filter(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        .count()
}

#[test]
fn the_first_demo_on_a_purged_stack_matches_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let ports = orelink_tests::free_ports::<4>();
    let out = orelink(home.path(), ports, &["demo", "--duration", "15s", "--rate", "300"], DEMO_DEADLINE);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Whatever happened, the stack this test made goes away.
    let down = orelink_down(home.path(), ports);
    assert!(out.status.success(), "the first demo failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
    let done = stderr.lines().find(|l| l.contains("[demo] done:")).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    let allocations: u64 = done
        .split(", ")
        .find_map(|part| part.strip_suffix(" allocations committed by the matcher").and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no allocation count in: {done}"));
    assert!(allocations > 0, "no allocations: {done}");
    assert!(stderr.contains("every role ran without a failure"), "a role failed:\n{stderr}");
    assert!(down.status.success(), "stack down failed:\n{}", String::from_utf8_lossy(&down.stderr));
    assert!(!home.path().join("stack").exists(), "--purge left the stack's data");
    assert_eq!(processes_of(home.path()), 0, "a process of this stack is still running");
}

#[test]
fn a_bad_stack_port_is_one_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(orelink_tests::orelink_bin());
    let out = cmd.args(["stack", "status"]).env("ORELINK_HOME", home.path()).env("ORELINK_STACK_KAFKA_PORT", "not-a-port").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "one line, no backtrace:\n{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("ORELINK_STACK_KAFKA_PORT"), "{stderr}");
}

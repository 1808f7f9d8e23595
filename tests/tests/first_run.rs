//! A newcomer's first run: `orelink demo` on a machine where the stack was
//! never made (its own `ORELINK_HOME` and ports, beside the tests' stack) brings
//! the stack up, matches, and exits 0; `stack down --purge` then leaves nothing
//! running. Kafka's jars come from the shared cache, so no download is repeated.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `orelink <args>` as a newcomer runs it: none of the developer's settings, this stack's home and ports.
fn orelink(home: &Path, ports: [u16; 4], args: &[&str]) -> Output {
    let mut cmd = Command::new(orelink_tests::orelink_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORELINK")) {
        cmd.env_remove(k);
    }
    for ((var, _), port) in orelink_stack::PORT_VARS.iter().zip(ports) {
        cmd.env(var, port.to_string());
    }
    cmd.args(args)
        .env("ORELINK_HOME", home)
        .env("ORELINK__VIEW__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("orelink runs")
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
    let out = orelink(home.path(), ports, &["demo", "--duration", "15s", "--rate", "300"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Whatever happened, the stack this test made goes away.
    let down = orelink(home.path(), ports, &["stack", "down", "--purge"]);
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

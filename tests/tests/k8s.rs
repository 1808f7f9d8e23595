//! k8s/ validated offline: both kustomize overlays build, every core resource
//! passes the Kubernetes JSON schemas in strict mode (kubernetes-validate),
//! and every Strimzi resource passes the Strimzi CRDs' openAPIV3Schema and
//! carries what the hub relies on. (That the rendered
//! topics and users are current is a unit test of `orelink topology render`.)

use orelink_tests::repo_root;

#[test]
fn both_overlays_build_and_validate() {
    let kustomize = std::env::var("KUSTOMIZE").unwrap_or_else(|_| format!("{}/go/bin/kustomize", std::env::var("HOME").unwrap_or_default()));
    assert!(std::path::Path::new(&kustomize).exists(), "{kustomize} is missing: go install sigs.k8s.io/kustomize/kustomize/v5@v5.6.0 (.ci/run does)");
    let root = repo_root();
    let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root.join("tests/k8s/validate.py"))
        .arg(&kustomize)
        .arg(root.join("k8s"))
        .output()
        .expect("python3 runs (tests/run installs kubernetes-validate)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "validation failed:\n{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for l in &lines {
        assert!(l["core"].as_u64().unwrap() >= 20 && l["strimzi"].as_u64().unwrap() >= 20, "{l}");
    }
}

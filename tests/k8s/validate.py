"""Offline validation of k8s/: builds both overlays with kustomize and checks
every core resource against the Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields are errors), and every Strimzi resource against the
openAPIV3Schema of the Strimzi 0.49.0 CRDs (strimzi.mjs, beside this file;
`npm ci --prefix tests/k8s` installs it) plus the fields the hub relies on.

    python3 validate.py <kustomize binary> <k8s dir>

Prints one JSON line per overlay; exits non-zero on the first invalid resource.
"""
import json
import os
import subprocess
import sys

import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"
STRIMZI = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}


def strimzi_ok(doc):
    kind, spec = doc["kind"], doc.get("spec") or {}
    assert doc["apiVersion"] == "kafka.strimzi.io/v1", doc["apiVersion"]
    if kind == "KafkaTopic":
        assert spec["partitions"] > 0 and spec["replicas"] > 0 and spec["topicName"], doc
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "orelink", doc
    elif kind == "KafkaUser":
        assert spec["authentication"]["type"] == "scram-sha-512", doc
        for acl in spec["authorization"]["acls"]:
            assert acl["operations"], doc
            assert acl["resource"]["type"] in {"topic", "group", "transactionalId", "cluster"}, acl
    elif kind == "KafkaNodePool":
        assert spec["replicas"] >= 1 and set(spec["roles"]) <= {"controller", "broker"}, doc
    elif kind == "Kafka":
        assert spec["kafka"]["authorization"]["type"] == "simple", doc


def crd_check(docs):
    """Strimzi resources against the CRD schemas: None if valid, else the problems."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "strimzi.mjs")
    out = subprocess.run(["node", script], input=json.dumps(docs), capture_output=True, text=True)
    if out.returncode == 0 and json.loads(out.stdout)["validated"] == len(docs):
        return None
    return (out.stdout + out.stderr).strip()


def main(kustomize, root):
    # The CRD check must be able to fail: a topic with a non-integer partition
    # count is refused, or the validator is not doing its job.
    broken = {"apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic", "metadata": {"name": "broken"}, "spec": {"partitions": "six"}}
    refused = crd_check([broken])
    if not refused or "/spec/partitions" not in refused:
        print(f"the Strimzi CRD validator accepted an invalid KafkaTopic: {refused}", file=sys.stderr)
        sys.exit(1)

    failed = False
    for overlay in ("dev", "prod"):
        out = subprocess.run([kustomize, "build", f"{root}/overlays/{overlay}"], check=True, capture_output=True, text=True).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        core = strimzi = 0
        crd_docs = [d for d in docs if d["kind"] in STRIMZI]
        problems = crd_check(crd_docs)
        if problems:
            print(f"INVALID {overlay} (Strimzi CRD schema): {problems}", file=sys.stderr)
            failed = True
        for d in docs:
            name = f"{overlay}: {d['kind']}/{d['metadata']['name']}"
            try:
                if d["kind"] in STRIMZI:
                    strimzi_ok(d)
                    strimzi += 1
                else:
                    kubernetes_validate.validate(d, K8S_VERSION, strict=True)
                    core += 1
            except (kubernetes_validate.ValidationError, AssertionError, KeyError) as e:
                print(f"INVALID {name}: {e}", file=sys.stderr)
                failed = True
        print(json.dumps({"overlay": overlay, "core": core, "strimzi": strimzi}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

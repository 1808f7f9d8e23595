// Validates Strimzi resources against the openAPIV3Schema of the Strimzi CRDs.
// The CRD YAML itself (strimzi-crds-0.49.0.yaml, a GitHub release asset) cannot
// be fetched from the package registries these machines reach; kubernetes-models
// generates its validators from exactly that file, so they stand in for it,
// pinned by package-lock.json.
//
//   node strimzi.mjs < docs.json     (a JSON array of resources)
//
// Prints {"validated": N} or one line per invalid resource; exits 1 if any is.
import { readFileSync } from "node:fs";

const KINDS = ["Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"];
const models = {};
for (const kind of KINDS) {
  for (const version of ["v1"]) {
    const m = await import(`@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/${version}/${kind}`);
    models[`kafka.strimzi.io/${version}/${kind}`] = m[kind];
  }
}

const docs = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) {
    console.log(`INVALID ${name}: no CRD schema for ${doc.apiVersion} ${doc.kind}`);
    bad++;
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (e) {
    const detail = (e.errors || []).map((x) => `${x.instancePath} ${x.message}`).join("; ");
    console.log(`INVALID ${name}: ${detail || e.message}`);
    bad++;
  }
}
if (bad === 0) console.log(JSON.stringify({ validated: docs.length }));
process.exit(bad === 0 ? 0 : 1);

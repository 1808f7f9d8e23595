//! `topology apply` against the real broker and registry.

use orelink_domain::topology::{TopologySources, topics};
use orelink_platform::apply::{self, ApplyError, Change};
use orelink_platform::Reference;
use orelink_tests::{TestEnv, schema_files};

const CATALOG: &str = include_str!("../../schemas/catalog.toml");

/// The repository's schemas with OrderEvent's fields replaced by `edit`.
fn with_order_schema(edit: impl Fn(&mut serde_json::Value)) -> Reference {
    let files = schema_files()
        .into_iter()
        .map(|(name, text)| {
            if name == "OrderEvent.avsc" {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                edit(&mut v);
                (name, serde_json::to_string_pretty(&v).unwrap())
            } else {
                (name, text)
            }
        })
        .collect();
    Reference::from_parts(TopologySources::EMBEDDED, CATALOG, files).unwrap()
}

#[tokio::test]
async fn apply_is_idempotent_and_refuses_an_incompatible_schema() {
    let env = TestEnv::new().await;
    let first = env.apply().await;
    let created = first.changes.iter().filter(|c| matches!(c, Change::CreateTopic { .. })).count();
    let registered = first.changes.iter().filter(|c| matches!(c, Change::RegisterSchema { .. })).count();
    assert_eq!(created, env.reference.topology.topics.len(), "{:#?}", first.changes);
    assert_eq!(registered, env.reference.topology.topics.iter().map(|t| t.subjects().len()).sum::<usize>());

    let second = env.apply().await;
    assert!(second.changes.is_empty(), "a second apply changed: {:#?}", second.changes);

    // A new required field breaks BACKWARD_TRANSITIVE: old orders could not be read.
    let breaking = with_order_schema(|v| {
        v["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "incoterm", "type": "string"}))
    });
    let err = apply::apply(&env.client("admin"), &env.registry(), &breaking, &env.ns, false).await.err().expect("refused");
    let subject = env.topic("orelink.orders.v1-value");
    // Every subject of orders: the contract topic's, the market topic's and each enterprise's ingest topic's.
    let mut order_subjects: Vec<String> = [subject.clone(), env.topic(&format!("{}-orelink.v1.OrderEvent", topics::MARKET))]
        .into_iter()
        .chain(env.reference.topology.enterprises.iter().map(|e| env.topic(&format!("{}-orelink.v1.OrderEvent", topics::ingest(&e.id)))))
        .collect();
    order_subjects.sort();
    match &err {
        ApplyError::Incompatible(refused) => {
            let mut names: Vec<String> = refused.iter().map(|r| r.0.clone()).collect();
            names.sort();
            assert_eq!(names, order_subjects, "{err}");
            let reason = refused[0].1.join(" ");
            assert!(reason.contains("backward") && reason.contains("version 1"), "reason: {reason}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let versions: Vec<u32> = serde_json::from_value(env.registry_get(&format!("/subjects/{subject}/versions")).await).unwrap();
    assert_eq!(versions, vec![1], "a refused schema must not be registered");

    // An optional field with a default is a compatible evolution, registered as version 2.
    let compatible = with_order_schema(|v| {
        v["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "incoterm", "type": ["null", "string"], "default": null}))
    });
    let applied = apply::apply(&env.client("admin"), &env.registry(), &compatible, &env.ns, false).await.expect("compatible change");
    let mut registered: Vec<Change> = applied.changes.clone();
    registered.sort_by_key(|c| format!("{c:?}"));
    let expected: Vec<Change> = order_subjects.iter().map(|s| Change::RegisterSchema { subject: s.clone(), record: "orelink.v1.OrderEvent".into() }).collect();
    assert_eq!(registered, expected);
    let versions: Vec<u32> = serde_json::from_value(env.registry_get(&format!("/subjects/{subject}/versions")).await).unwrap();
    assert_eq!(versions, vec![1, 2]);
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let env = TestEnv::new().await;
    let plan = apply::apply(&env.client("admin"), &env.registry(), &env.reference, &env.ns, true).await.unwrap();
    assert!(!plan.changes.is_empty());
    let again = apply::apply(&env.client("admin"), &env.registry(), &env.reference, &env.ns, true).await.unwrap();
    assert_eq!(plan.changes, again.changes, "a dry run must leave the plan as it was");
}

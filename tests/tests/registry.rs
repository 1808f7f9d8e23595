//! The registry role over HTTP: the Confluent API that clients call, and
//! ids that survive a restart because they live in a compacted Kafka topic.

use orelink_registry::{RegistryConfig, serve};
use orelink_tests::TestEnv;
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id, get_schema_by_subject, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const V1: &str = r#"{"type":"record","name":"Heat","namespace":"orelink.test","fields":[{"name":"pot","type":"string"},{"name":"amps","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"Heat","namespace":"orelink.test","fields":[{"name":"pot","type":"string"},{"name":"amps","type":"long"},{"name":"volts","type":["null","double"],"default":null}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"Heat","namespace":"orelink.test","fields":[{"name":"pot","type":"string"},{"name":"amps","type":"long"},{"name":"line","type":"int"}]}"#;

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).header("Content-Type", "application/vnd.schemaregistry.v1+json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A registry instance of this test's own, on a free port, over its own `_schemas` topic.
async fn start(env: &TestEnv, topic: &str) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    let cfg = RegistryConfig { kafka: env.client("registry"), topic: topic.into(), listen: format!("127.0.0.1:{port}").parse().unwrap() };
    let c = cancel.clone();
    let task = tokio::spawn(async move { serve(cfg, c).await.expect("registry serves") });
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/subjects")).await.is_ok_and(|r| r.status().is_success()) {
            return (url, cancel, task);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("registry on {url} did not come up");
}

#[tokio::test]
async fn confluent_api_and_ids_stable_across_restarts() {
    let env = TestEnv::new().await;
    let topic = format!("{}_schemas", env.ns);
    let (url, cancel, task) = start(&env, &topic).await;
    let sr = SrSettings::new_builder(url.clone()).no_proxy().build().unwrap();
    let subject = "heat-value".to_string();

    // Registration through schema_registry_converter; the same schema twice gives the same id.
    let r1 = post_schema(&sr, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V1.into())).await.unwrap();
    let again = post_schema(&sr, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V1.into())).await.unwrap();
    assert_eq!(r1.id, again.id);
    let (s, v) = call(reqwest::Method::PUT, format!("{url}/config/{subject}"), Some(json!({"compatibility": "BACKWARD_TRANSITIVE"}))).await;
    assert_eq!((s, v["compatibility"].as_str()), (200, Some("BACKWARD_TRANSITIVE")));
    let r2 = post_schema(&sr, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V2.into())).await.unwrap();
    assert_ne!(r1.id, r2.id);

    // Read back through the converter, by id and by subject.
    let by_id = get_schema_by_id(r1.id, &sr).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&by_id.schema).unwrap(), serde_json::from_str::<Value>(V1).unwrap());
    let latest = get_schema_by_subject(&sr, &SubjectNameStrategy::TopicNameStrategy("heat".into(), false)).await.unwrap();
    assert_eq!((latest.id, latest.version), (r2.id, Some(2)));
    let (s, v) = call(reqwest::Method::GET, format!("{url}/subjects/{subject}/versions/latest"), None).await;
    assert_eq!((s, v["version"].as_u64(), v["id"].as_u64()), (200, Some(2), Some(r2.id as u64)));

    // Confluent error bodies.
    let (s, v) = call(reqwest::Method::POST, format!("{url}/subjects/{subject}/versions"), Some(json!({"schema": BREAKS}))).await;
    assert_eq!((s, v["error_code"].as_u64()), (409, Some(409)), "{v}");
    let (s, v) = call(reqwest::Method::GET, format!("{url}/schemas/ids/987654"), None).await;
    assert_eq!((s, v["error_code"].as_u64()), (404, Some(40403)));
    let (s, v) = call(reqwest::Method::GET, format!("{url}/subjects/nope-value/versions"), None).await;
    assert_eq!((s, v["error_code"].as_u64()), (404, Some(40401)));
    let (s, v) = call(reqwest::Method::GET, format!("{url}/subjects/{subject}/versions/9"), None).await;
    assert_eq!((s, v["error_code"].as_u64()), (404, Some(40402)));
    let (s, v) = call(reqwest::Method::POST, format!("{url}/subjects/{subject}/versions"), Some(json!({"schema": "{\"type\": \"recrod\"}"}))).await;
    assert_eq!((s, v["error_code"].as_u64()), (422, Some(42201)));
    let (s, v) = call(reqwest::Method::PUT, format!("{url}/config"), Some(json!({"compatibility": "SIDEWAYS"}))).await;
    assert_eq!((s, v["error_code"].as_u64()), (422, Some(42203)));
    let (s, v) = call(reqwest::Method::POST, format!("{url}/compatibility/subjects/{subject}/versions/latest?verbose=true"), Some(json!({"schema": BREAKS}))).await;
    assert_eq!((s, v["is_compatible"].as_bool()), (200, Some(false)));
    assert!(!v["messages"].as_array().unwrap().is_empty());

    // Lookup, soft delete of another subject, then restart.
    let (s, v) = call(reqwest::Method::POST, format!("{url}/subjects/{subject}"), Some(json!({"schema": V1}))).await;
    assert_eq!((s, v["version"].as_u64()), (200, Some(1)));
    post_schema(&sr, "scrap-value".into(), SuppliedSchema::new(None, SchemaType::Avro, BREAKS.into())).await.unwrap();
    let (s, v) = call(reqwest::Method::DELETE, format!("{url}/subjects/scrap-value"), None).await;
    assert_eq!((s, v), (200, json!([1])));

    cancel.cancel();
    task.await.unwrap();
    let (url2, cancel2, task2) = start(&env, &topic).await;
    let sr2 = SrSettings::new_builder(url2.clone()).no_proxy().build().unwrap();
    let restored = get_schema_by_id(r2.id, &sr2).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&restored.schema).unwrap(), serde_json::from_str::<Value>(V2).unwrap());
    let (_, versions) = call(reqwest::Method::GET, format!("{url2}/subjects/{subject}/versions"), None).await;
    assert_eq!(versions, json!([1, 2]));
    let (_, subjects) = call(reqwest::Method::GET, format!("{url2}/subjects"), None).await;
    assert_eq!(subjects, json!(["heat-value"]), "the soft-deleted subject stays deleted");
    let (_, level) = call(reqwest::Method::GET, format!("{url2}/config/{subject}"), None).await;
    assert_eq!(level["compatibilityLevel"], "BACKWARD_TRANSITIVE");
    // Same schema after the restart: same id, no new version.
    let r1b = post_schema(&sr2, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V1.into())).await.unwrap();
    assert_eq!(r1b.id, r1.id);
    cancel2.cancel();
    task2.await.unwrap();
}

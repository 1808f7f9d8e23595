//! Interoperability with an independent client: Python confluent-kafka
//! (librdkafka plus Confluent's AvroSerializer/AvroDeserializer and
//! SchemaRegistryClient) against the Rust codec and schema_registry_converter.

use orelink_codec::Record;
use orelink_domain::topology::topics;
use orelink_tests::{TestEnv, order_wire, python, read_n, repo_root};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_subject, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use std::time::Duration;

#[tokio::test]
async fn python_produces_rust_decodes() {
    let env = TestEnv::new().await;
    env.apply().await;
    let orders = env.topic(topics::ORDERS);
    let order = order_wire(7);
    let sent = python(&[
        "produce-order",
        "--bootstrap", &env.cfg.kafka.brokers,
        "--registry", &env.cfg.registry.url,
        "--topic", &orders,
        "--key", "AL-INGOT",
        "--order", &serde_json::to_string(&order).unwrap(),
    ]);
    let schema_id = sent[0]["schema_id"].as_u64().unwrap();

    let got = read_n(env.consumer(&orders), 1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1);
    let (key, value) = &got[0];
    assert_eq!(key.as_deref(), Some(&b"AL-INGOT"[..]));
    let value = value.as_deref().unwrap();
    assert_eq!(u32::from_be_bytes(value[1..5].try_into().unwrap()) as u64, schema_id);
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    match codec.decode(&orders, Some(value)).await.unwrap() {
        Record::Order(o) => assert_eq!(o.to_wire(), order, "validated domain order equals what Python sent"),
        other => panic!("expected an order, got {other:?}"),
    }
}

#[tokio::test]
async fn rust_produces_python_decodes() {
    let env = TestEnv::new().await;
    env.apply().await;
    let orders = env.topic(topics::ORDERS);
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let order = order_wire(8);
    let bytes = codec.encode(&orders, &order).await.unwrap();
    env.produce(&orders, "AL-INGOT", &bytes).await;

    let lines = python(&[
        "consume",
        "--bootstrap", &env.cfg.kafka.brokers,
        "--registry", &env.cfg.registry.url,
        "--topic", &orders,
        "--group", &format!("{}py", env.ns),
        "--count", "1",
    ]);
    assert_eq!(lines[0]["key"], "AL-INGOT");
    assert_eq!(lines[0]["value"], serde_json::to_value(&order).unwrap(), "Python decoded exactly the order Rust sent");
}

#[tokio::test]
async fn schema_registration_both_ways() {
    let env = TestEnv::new().await;
    let login = env.cfg.registry_login();
    let mut sr = SrSettings::new_builder(env.cfg.registry.url.clone());
    sr.no_proxy();
    if let Some((user, password)) = &login {
        sr.set_basic_authorization(user, Some(password));
    }
    let sr = sr.build().unwrap();
    let capacity = std::fs::read_to_string(repo_root().join("schemas/CapacityEvent.avsc")).unwrap();

    // schema_registry_converter registers; Python's SchemaRegistryClient reads it back.
    let rust_subject = format!("{}rust-registered-value", env.ns);
    let registered = post_schema(&sr, rust_subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, capacity.clone())).await.unwrap();
    let seen = python(&["latest", "--registry", &env.cfg.registry.url, "--subject", &rust_subject]);
    assert_eq!(seen[0]["id"].as_u64(), Some(registered.id as u64));
    assert_eq!(seen[0]["version"].as_u64(), Some(1));
    assert_eq!(seen[0]["schema"], serde_json::from_str::<serde_json::Value>(&capacity).unwrap());

    // Python registers; schema_registry_converter finds it under TopicNameStrategy.
    let topic = format!("{}py-registered", env.ns);
    let schema_file = repo_root().join("schemas/ShipmentEvent.avsc");
    let py = python(&["register", "--registry", &env.cfg.registry.url, "--subject", &format!("{topic}-value"), "--schema-file", schema_file.to_str().unwrap()]);
    let found = get_schema_by_subject(&sr, &SubjectNameStrategy::TopicNameStrategy(topic, false)).await.unwrap();
    assert_eq!(Some(found.id as u64), py[0]["id"].as_u64());
    let shipment = std::fs::read_to_string(schema_file).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&found.schema).unwrap(), serde_json::from_str::<serde_json::Value>(&shipment).unwrap());
}

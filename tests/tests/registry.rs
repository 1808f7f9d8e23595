//! The registry role over HTTP: the Confluent API that clients call, and
//! ids that survive a restart because they live in a compacted Kafka topic;
//! callers log in as Kafka users, and only the admin changes anything.

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

/// A request as `login` (user, password), or with no login.
async fn call_as(login: Option<(&str, &str)>, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).header("Content-Type", "application/vnd.schemaregistry.v1+json");
    if let Some((user, password)) = login {
        req = req.basic_auth(user, Some(password));
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The admin of the test stack (the one writer).
fn admin(env: &TestEnv) -> (String, String) {
    (env.cfg.kafka.username.clone(), env.cfg.kafka.password.expose().to_owned())
}

async fn call(env: &TestEnv, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let (user, password) = admin(env);
    call_as(Some((&user, &password)), method, url, body).await
}

/// schema_registry_converter's settings, logged in as the admin.
fn settings(env: &TestEnv, url: &str) -> SrSettings {
    let (user, password) = admin(env);
    SrSettings::new_builder(url.to_owned()).no_proxy().set_basic_authorization(&user, Some(&password)).build().unwrap()
}

/// A registry instance of this test's own, on a free port, over its own `_schemas` topic.
async fn start(env: &TestEnv, topic: &str) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    let auth = orelink_registry::auth::Auth::new(env.client("registry-auth"), vec![env.cfg.kafka.username.clone()]);
    let cfg = RegistryConfig { kafka: env.client("registry"), topic: topic.into(), listen: format!("127.0.0.1:{port}").parse().unwrap(), auth: Some(auth) };
    let c = cancel.clone();
    let task = tokio::spawn(async move { serve(cfg, c).await.expect("registry serves") });
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/")).await.is_ok_and(|r| r.status().is_success()) {
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
    let sr = settings(&env, &url);
    let subject = "heat-value".to_string();

    // Registration through schema_registry_converter; the same schema twice gives the same id.
    let r1 = post_schema(&sr, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V1.into())).await.unwrap();
    let again = post_schema(&sr, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V1.into())).await.unwrap();
    assert_eq!(r1.id, again.id);
    let (s, v) = call(&env, reqwest::Method::PUT, format!("{url}/config/{subject}"), Some(json!({"compatibility": "BACKWARD_TRANSITIVE"}))).await;
    assert_eq!((s, v["compatibility"].as_str()), (200, Some("BACKWARD_TRANSITIVE")));
    let r2 = post_schema(&sr, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V2.into())).await.unwrap();
    assert_ne!(r1.id, r2.id);

    // Read back through the converter, by id and by subject.
    let by_id = get_schema_by_id(r1.id, &sr).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&by_id.schema).unwrap(), serde_json::from_str::<Value>(V1).unwrap());
    let latest = get_schema_by_subject(&sr, &SubjectNameStrategy::TopicNameStrategy("heat".into(), false)).await.unwrap();
    assert_eq!((latest.id, latest.version), (r2.id, Some(2)));
    let (s, v) = call(&env, reqwest::Method::GET, format!("{url}/subjects/{subject}/versions/latest"), None).await;
    assert_eq!((s, v["version"].as_u64(), v["id"].as_u64()), (200, Some(2), Some(r2.id as u64)));

    // Confluent error bodies.
    let (s, v) = call(&env, reqwest::Method::POST, format!("{url}/subjects/{subject}/versions"), Some(json!({"schema": BREAKS}))).await;
    assert_eq!((s, v["error_code"].as_u64()), (409, Some(409)), "{v}");
    let (s, v) = call(&env, reqwest::Method::GET, format!("{url}/schemas/ids/987654"), None).await;
    assert_eq!((s, v["error_code"].as_u64()), (404, Some(40403)));
    let (s, v) = call(&env, reqwest::Method::GET, format!("{url}/subjects/nope-value/versions"), None).await;
    assert_eq!((s, v["error_code"].as_u64()), (404, Some(40401)));
    let (s, v) = call(&env, reqwest::Method::GET, format!("{url}/subjects/{subject}/versions/9"), None).await;
    assert_eq!((s, v["error_code"].as_u64()), (404, Some(40402)));
    let (s, v) = call(&env, reqwest::Method::POST, format!("{url}/subjects/{subject}/versions"), Some(json!({"schema": "{\"type\": \"recrod\"}"}))).await;
    assert_eq!((s, v["error_code"].as_u64()), (422, Some(42201)));
    let (s, v) = call(&env, reqwest::Method::PUT, format!("{url}/config"), Some(json!({"compatibility": "SIDEWAYS"}))).await;
    assert_eq!((s, v["error_code"].as_u64()), (422, Some(42203)));
    let (s, v) = call(&env, reqwest::Method::POST, format!("{url}/compatibility/subjects/{subject}/versions/latest?verbose=true"), Some(json!({"schema": BREAKS}))).await;
    assert_eq!((s, v["is_compatible"].as_bool()), (200, Some(false)));
    assert!(!v["messages"].as_array().unwrap().is_empty());

    // Lookup, soft delete of another subject, then restart.
    let (s, v) = call(&env, reqwest::Method::POST, format!("{url}/subjects/{subject}"), Some(json!({"schema": V1}))).await;
    assert_eq!((s, v["version"].as_u64()), (200, Some(1)));
    post_schema(&sr, "scrap-value".into(), SuppliedSchema::new(None, SchemaType::Avro, BREAKS.into())).await.unwrap();
    let (s, v) = call(&env, reqwest::Method::DELETE, format!("{url}/subjects/scrap-value"), None).await;
    assert_eq!((s, v), (200, json!([1])));

    cancel.cancel();
    task.await.unwrap();
    let (url2, cancel2, task2) = start(&env, &topic).await;
    let sr2 = settings(&env, &url2);
    let restored = get_schema_by_id(r2.id, &sr2).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&restored.schema).unwrap(), serde_json::from_str::<Value>(V2).unwrap());
    let (_, versions) = call(&env, reqwest::Method::GET, format!("{url2}/subjects/{subject}/versions"), None).await;
    assert_eq!(versions, json!([1, 2]));
    let (_, subjects) = call(&env, reqwest::Method::GET, format!("{url2}/subjects"), None).await;
    assert_eq!(subjects, json!(["heat-value"]), "the soft-deleted subject stays deleted");
    let (_, level) = call(&env, reqwest::Method::GET, format!("{url2}/config/{subject}"), None).await;
    assert_eq!(level["compatibilityLevel"], "BACKWARD_TRANSITIVE");
    // Same schema after the restart: same id, no new version.
    let r1b = post_schema(&sr2, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, V1.into())).await.unwrap();
    assert_eq!(r1b.id, r1.id);
    cancel2.cancel();
    task2.await.unwrap();
}

/// No login, a wrong password: 401. A hub principal that is not a writer
/// reads, and gets 403 for a write (registering, deleting, `PUT /config`).
#[tokio::test]
async fn only_a_login_reads_and_only_a_writer_writes() {
    let env = TestEnv::new().await;
    env.apply().await;
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("principals.toml");
    let (admin_client, reference, ns, f) = (env.client("admin"), env.reference.clone(), env.ns.clone(), users_file.clone());
    tokio::task::spawn_blocking(move || orelink_platform::access_apply::apply_access(&admin_client, &reference, &ns, &f, false).expect("access apply")).await.unwrap();
    let users = orelink_platform::access_apply::read_users(&users_file).unwrap();
    let reader = format!("{}orelink-view", env.ns);
    let reader_pw = users[&reader].expose().to_owned();

    let (url, cancel, task) = start(&env, &format!("{}_schemas", env.ns)).await;
    let register = |login| call_as(login, reqwest::Method::POST, format!("{url}/subjects/heat-value/versions"), Some(json!({"schema": V1})));
    let (s, v) = register(None).await;
    assert_eq!((s, v["error_code"].as_u64()), (401, Some(40101)), "{v}");
    let (s, _) = register(Some((&reader, "not-the-password"))).await;
    assert_eq!(s, 401);
    let (s, v) = register(Some((&reader, &reader_pw))).await;
    assert_eq!((s, v["error_code"].as_u64()), (403, Some(40301)), "a reader may not register: {v}");
    let (s, _) = call_as(Some((&reader, &reader_pw)), reqwest::Method::PUT, format!("{url}/config"), Some(json!({"compatibility": "NONE"}))).await;
    assert_eq!(s, 403, "a reader may not lower the compatibility");
    let (s, v) = call(&env, reqwest::Method::POST, format!("{url}/subjects/heat-value/versions"), Some(json!({"schema": V1}))).await;
    assert_eq!(s, 200, "the admin registers: {v}");
    // What a serializer does: "register" a schema the subject has; nothing changes, so a reader may.
    let (s, again) = register(Some((&reader, &reader_pw))).await;
    assert_eq!((s, &again["id"]), (200, &v["id"]), "a reader gets the id of a registered schema: {again}");
    let (s, _) = call_as(Some((&reader, &reader_pw)), reqwest::Method::POST, format!("{url}/subjects/heat-value/versions"), Some(json!({"schema": V2}))).await;
    assert_eq!(s, 403, "a reader may not register a new version");
    let (s, v) = call_as(Some((&reader, &reader_pw)), reqwest::Method::GET, format!("{url}/subjects/heat-value/versions/latest"), None).await;
    assert_eq!((s, v["version"].as_u64()), (200, Some(1)), "a hub principal reads");
    let (s, _) = call_as(Some((&reader, &reader_pw)), reqwest::Method::POST, format!("{url}/subjects/heat-value"), Some(json!({"schema": V1}))).await;
    assert_eq!(s, 200, "a lookup is a read");
    let (s, _) = call_as(None, reqwest::Method::GET, format!("{url}/subjects"), None).await;
    assert_eq!(s, 401, "reads need a login too");
    let (s, _) = call_as(None, reqwest::Method::GET, format!("{url}/"), None).await;
    assert_eq!(s, 200, "the root answers health checks without one");
    cancel.cancel();
    task.await.unwrap();
}

/// A topic of several records (an enterprise's ingest topic): the hub's codec
/// writes each record under its own subject `<topic>-<record>`, reads back
/// what it wrote, writes the same bytes once the id is known, and refuses a
/// record the topic does not carry.
#[tokio::test]
async fn the_codec_writes_several_records_on_one_topic_each_under_its_own_subject() {
    use orelink_codec::{EncodeError, Record};
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let ingest = env.topic(&orelink_domain::topology::topics::ingest("91451000MA5L0CHG10"));
    let order = orelink_tests::order_wire(7);
    let capacity = orelink_tests::capacity_wire(7, "baise-pingguo-smelter", "baise", "AL-INGOT-AL99.85", 500_000, 20_300);
    let o = codec.encode_as(&ingest, "orelink.v1.OrderEvent", &order).await.unwrap();
    let c = codec.encode_as(&ingest, "orelink.v1.CapacityEvent", &capacity).await.unwrap();
    let id = |bytes: &[u8]| orelink_codec::split_wire(bytes).unwrap().0 as i64;
    for (record, bytes) in [("orelink.v1.OrderEvent", &o), ("orelink.v1.CapacityEvent", &c)] {
        let (status, latest) = call(&env, reqwest::Method::GET, format!("{}/subjects/{ingest}-{record}/versions/latest", env.cfg.registry.url), None).await;
        assert_eq!((status, latest["id"].as_i64()), (200, Some(id(bytes))), "{record}: {latest}");
    }
    assert_ne!(id(&o), id(&c));
    match codec.decode(&ingest, Some(&o)).await.unwrap() {
        Record::Order(back) => assert_eq!(back.order_id.as_str(), order.order_id),
        other => panic!("an order came back as {other:?}"),
    }
    assert!(matches!(codec.decode(&ingest, Some(&c)).await.unwrap(), Record::Capacity(ref back) if back.capacity_id.as_str() == capacity.capacity_id));
    // The id is known now: the body is written directly, byte for byte the same.
    assert_eq!(codec.encode_as(&ingest, "orelink.v1.OrderEvent", &order).await.unwrap(), o);
    assert!(matches!(codec.encode_as(&ingest, "orelink.v1.Allocation", &order).await, Err(EncodeError::NotCarried { .. })));
    let orders = env.topic(orelink_domain::topology::topics::ORDERS);
    assert!(matches!(codec.encode_as(&orders, "orelink.v1.OrderEvent", &order).await, Err(EncodeError::NotCarried { .. })), "a topic of one record takes encode");
}

/// A carrier's offer (contract v1.1) goes through the registry and back: the
/// first encoding registers the schema (the registry's own Avro reading of
/// the bytes), the second is written directly, byte for byte the same, and
/// decoding validates it.
#[tokio::test]
async fn a_carriers_offer_round_trips_through_the_registry() {
    use orelink_domain::events::{TransportOfferKind, wire};
    let env = TestEnv::new().await;
    env.apply().await;
    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let topic = env.topic(orelink_domain::topology::topics::TRANSPORT_OFFERS);
    let offer = wire::TransportOffer {
        event_id: "evt-off-1".into(),
        event_time: 1_796_083_200_000,
        offer_id: "OFF-BS-NN-1".into(),
        kind: TransportOfferKind::Offered,
        carrier_id: env.reference.topology.partners[0].carrier_id.clone(),
        mode: orelink_domain::TransportMode::Rail,
        from_cluster: "baise".into(),
        to_cluster: "nanning".into(),
        capacity_kg: 3_500_000,
        available_from: 1_796_083_200_000,
        available_until: 1_796_688_000_000,
        price_cny_per_t: 62,
        transit_hours: 14,
    };
    let first = codec.encode(&topic, &offer).await.unwrap();
    assert_eq!(codec.encode(&topic, &offer).await.unwrap(), first);
    match codec.decode(&topic, Some(&first)).await.unwrap() {
        orelink_codec::Record::TransportOffer(back) => assert_eq!(back.to_wire(), offer),
        other => panic!("an offer came back as {other:?}"),
    }
    let withdrawn = wire::TransportOffer { kind: TransportOfferKind::Withdrawn, capacity_kg: 0, ..offer.clone() };
    let bytes = codec.encode(&topic, &withdrawn).await.unwrap();
    assert!(matches!(codec.decode(&topic, Some(&bytes)).await.unwrap(), orelink_codec::Record::TransportOffer(ref b) if b.kind == TransportOfferKind::Withdrawn));
}

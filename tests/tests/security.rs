//! Access on the secured local stack (SASL/SCRAM, KRaft StandardAuthorizer),
//! with the principals and ACLs that `topology apply` derives from
//! `topology/`: a partner reads its own topic with its own groups and nothing
//! else; a client without credentials, or with a wrong password, is refused;
//! a hub role is refused a topic it does not use; ACLs no longer declared are
//! removed; a second apply changes nothing.

use orelink_domain::access::{Op, ResourceKind};
use orelink_domain::topology::topics;
use orelink_platform::access_apply::{AccessChange, apply_access, read_users};
use orelink_platform::acl::{AclAdmin, Binding};
use orelink_tests::TestEnv;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const A: &str = "beibu-gulf-logistics";
const B: &str = "xijiang-shipping";

/// Reads from `topic` (subscribed, from the start) in `group`: the first
/// message, or the error the broker answers.
fn read_first(config: &ClientConfig, group: &str, topic: &str) -> Result<Vec<u8>, KafkaError> {
    let consumer: BaseConsumer = config.clone().set("group.id", group).set("enable.auto.commit", "false").set("auto.offset.reset", "earliest").create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                use rdkafka::Message;
                // Committing proves the group may be used by this principal.
                let mut at = TopicPartitionList::new();
                at.add_partition_offset(topic, m.partition(), Offset::Offset(m.offset() + 1))?;
                consumer.commit(&at, rdkafka::consumer::CommitMode::Sync)?;
                return Ok(m.payload().unwrap_or_default().to_vec());
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut))
}

fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_decides_who_reads_and_writes_what() {
    let env = TestEnv::new().await;
    env.apply_topics().await;
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("principals.toml");
    let admin = env.client("admin");
    let (reference, ns) = (env.reference.clone(), env.ns.clone());
    let apply = {
        let (admin, reference, ns, users_file) = (admin.clone(), reference.clone(), ns.clone(), users_file.clone());
        move || apply_access(&admin, &reference, &ns, &users_file, false).expect("access apply")
    };
    let first = tokio::task::spawn_blocking(apply.clone()).await.unwrap();
    let created = first.iter().filter(|c| matches!(c, AccessChange::CreateUser(_))).count();
    assert_eq!(created, orelink_domain::access::principals(&env.reference.topology).len());
    assert!(first.iter().any(|c| matches!(c, AccessChange::Grant(_))));
    assert_eq!(tokio::task::spawn_blocking(apply.clone()).await.unwrap(), vec![], "a second apply changes nothing");
    let users = read_users(&users_file).unwrap();
    let pw = |name: &str| users[&format!("{ns}{name}")].expose().to_owned();
    let (a_user, b_user, matcher_user) = (format!("{ns}partner-{A}"), format!("{ns}partner-{B}"), format!("{ns}orelink-matcher"));
    let (a_pw, matcher_pw) = (pw(&format!("partner-{A}")), pw("orelink-matcher"));

    // Something in A's and B's topics, written as the admin.
    let (a_topic, b_topic) = (env.topic(&topics::partner(A)), env.topic(&topics::partner(B)));
    env.produce(&a_topic, "SHP-1", b"for A").await;
    env.produce(&b_topic, "SHP-2", b"for B").await;

    let a = as_user_cfg(&env.cfg.kafka.brokers, Some((&a_user, &a_pw)));
    let a_group = format!("{ns}partner-{A}-tracking");
    let checks = {
        let (a, a_group, a_topic, b_topic, orders) = (a.clone(), a_group.clone(), a_topic.clone(), b_topic.clone(), env.topic(topics::ORDERS));
        let (ns, env_cfg) = (ns.clone(), env.cfg.clone());
        let a_user = a_user.clone();
        tokio::task::spawn_blocking(move || {
            // A reads its own topic, in a group under its own prefix.
            assert_eq!(read_first(&a, &a_group, &a_topic).expect("partner A reads its topic"), b"for A");
            // A reading B's topic, or the orders, is refused.
            let e = read_first(&a, &a_group, &b_topic).expect_err("A must not read B's topic");
            assert_eq!(code(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
            let e = read_first(&a, &a_group, &orders).expect_err("A must not read the orders");
            assert_eq!(code(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
            // Another group's offsets, or its own topic in a group outside its prefix.
            let e = read_first(&a, &format!("{ns}orelink-fanout"), &a_topic).expect_err("A must not use the fanout's group or see its offsets");
            assert_eq!(code(&e), Some(RDKafkaErrorCode::GroupAuthorizationFailed), "{e}");
            let e = read_first(&a, &format!("{ns}someone-else"), &a_topic).expect_err("A must use its own group prefix");
            assert_eq!(code(&e), Some(RDKafkaErrorCode::GroupAuthorizationFailed), "{e}");

            // No credentials, or a wrong password: refused before anything else.
            let anon: BaseConsumer = as_user_cfg(&env_cfg.kafka.brokers, None).create().unwrap();
            assert!(anon.fetch_metadata(None, Duration::from_secs(5)).is_err(), "an anonymous client must get nothing");
            let wrong: BaseConsumer = as_user_cfg(&env_cfg.kafka.brokers, Some((&a_user, "not-the-password"))).create().unwrap();
            let e = wrong.fetch_metadata(None, Duration::from_secs(5)).expect_err("a wrong password must be refused");
            assert!(format!("{e}").contains("uthentication") || code(&e).is_some(), "{e}");

        })
    };
    checks.await.unwrap();

    // A hub role is refused a topic it does not use (the matcher and a partner
    // topic), and may write the topics it declares.
    let matcher: FutureProducer = as_user_cfg(&env.cfg.kafka.brokers, Some((&matcher_user, &matcher_pw))).create().unwrap();
    let send = |topic: String| {
        let matcher = matcher.clone();
        async move { matcher.send(FutureRecord::<str, [u8]>::to(&topic).key("k").payload(b"x"), Duration::from_secs(10)).await.map(|_| ()).map_err(|(e, _)| code(&e)) }
    };
    assert_eq!(send(a_topic.clone()).await, Err(Some(RDKafkaErrorCode::TopicAuthorizationFailed)));
    assert_eq!(send(env.topic(topics::ALLOCATIONS)).await, Ok(()));

    // An ACL the topology does not declare is removed by the next apply.
    let stray = Binding { kind: ResourceKind::Topic, name: env.topic(topics::ORDERS), prefix: false, principal: format!("User:{b_user}"), op: Op::Read };
    let add = {
        let (admin, stray) = (admin.clone(), stray.clone());
        move || AclAdmin::new(&admin).unwrap().create(&[stray]).unwrap()
    };
    tokio::task::spawn_blocking(add).await.unwrap();
    let third = tokio::task::spawn_blocking(apply.clone()).await.unwrap();
    assert_eq!(third, vec![AccessChange::Revoke(stray.clone())]);
    let left = tokio::task::spawn_blocking(move || AclAdmin::new(&admin).unwrap().describe(&format!("{ns}partner-")).unwrap()).await.unwrap();
    assert!(!left.contains(&stray));
}

/// A client as `user` (SCRAM-SHA-512), or with no credentials at all.
fn as_user_cfg(brokers: &str, user: Option<(&str, &str)>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("log_level", "0").set("message.timeout.ms", "10000");
    if let Some((u, p)) = user {
        c.set("security.protocol", "sasl_plaintext").set("sasl.mechanism", "SCRAM-SHA-512").set("sasl.username", u).set("sasl.password", p);
    }
    c
}

/// The hub's roles, each as its own principal with only the ACLs the topology
/// gives it, still do their work: the matcher allocates, the share role and
/// the fanout consume and commit, shipments reach their partner's topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_roles_work_under_their_own_least_privilege_principals() {
    use orelink_tests::{KillOnDrop, orelink_bin, produce_workload};
    let env = TestEnv::new().await;
    env.apply().await;
    let users = read_users(&env.principals_file()).unwrap();
    let start = |role: &str| {
        let user = format!("{}orelink-{role}", env.ns);
        KillOnDrop(
            std::process::Command::new(orelink_bin())
                .args(["run", role])
                .envs(env.process_env(&format!("least-{role}")))
                .env("ORELINK__KAFKA__USERNAME", &user)
                .env("ORELINK__KAFKA__PASSWORD", users[&user].expose())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("orelink runs"),
        )
    };
    let (_matcher, _share, _fanout) = (start("matcher"), start("share"), start("fanout"));

    let codec = orelink_platform::codec(&env.cfg, &env.reference).unwrap();
    let produced = produce_workload(&env, &codec, 20, 400, 11, None).await;
    assert!(produced > 400);
    let shipments = env.topic(topics::SHIPMENTS);
    for n in 0..20u32 {
        let s = orelink_domain::events::wire::ShipmentEvent {
            event_id: format!("least-shp-{n}"),
            event_time: 1_795_000_000_000 + n as i64,
            shipment_id: format!("SHP-L{n}"),
            allocation_id: None,
            carrier_id: "91450600MA5L0BGL1P".into(),
            mode: orelink_domain::topology::TransportMode::Sea,
            status: orelink_domain::events::ShipmentStatus::InTransit,
            from_site: "fcg-port".into(),
            to_site: "nanning-niuwan-port".into(),
            quantity_kg: 1000,
            lat: None,
            lon: None,
            eta: None,
        };
        env.produce(&shipments, &s.shipment_id, &codec.encode(&shipments, &s).await.unwrap()).await;
    }
    let groups = [
        (orelink_matcher::router_group(&env.cfg), vec![env.topic(topics::ORDERS), env.topic(topics::CAPACITY)]),
        (orelink_fanout::group(&env.cfg), vec![shipments.clone()]),
    ];
    for (group, topics) in &groups {
        env.wait_caught_up(group, topics, Duration::from_secs(120)).await;
    }
    // The share role holds the offsets of shares its policy delays, so it
    // need not catch up; it must have read and committed as its own principal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.committed(&orelink_share::group(&env.cfg), &env.topic(topics::ORDER_STATUS)).await.values().sum::<i64>() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the share role committed nothing as its own principal");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!env.read_topic(&env.topic(topics::ALLOCATIONS)).await.is_empty(), "the matcher allocated as its own principal");
    assert_eq!(env.read_topic(&env.topic(&topics::partner(A))).await.len(), 20, "the fanout routed as its own principal");
}

/// Each site's relay is its own principal: relay A may use its own
/// transactional id and progress topic, and can neither fence relay B (init
/// B's transactional id) nor read or advance B's progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sites_relay_cannot_fence_or_advance_anothers() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let env = TestEnv::new().await;
    env.apply().await;
    let users = read_users(&env.principals_file()).unwrap();
    let (a_site, b_site) = ("hechi-dachang-tin", "baise-jingxi-bauxite");
    let a_user = format!("{}orelink-edge-{a_site}", env.ns);
    let a = as_user_cfg(&env.cfg.kafka.brokers, Some((&a_user, users[&a_user].expose())));
    let (ns, b_progress, a_progress) = (env.ns.clone(), env.topic(&topics::edge_progress(b_site)), env.topic(&topics::edge_progress(a_site)));
    let (b_progress2, a_progress2) = (b_progress.clone(), a_progress.clone());
    tokio::task::spawn_blocking(move || {
        let (b_progress, a_progress) = (b_progress2, a_progress2);
        let transactional = |id: String| -> BaseProducer { a.clone().set("transactional.id", id).create().unwrap() };
        // Its own transactional id and progress: fine.
        let own = transactional(format!("{ns}orelink-edge-{a_site}"));
        own.init_transactions(Duration::from_secs(30)).expect("relay A uses its own transactional id");
        own.begin_transaction().unwrap();
        own.send(BaseRecord::<str, str>::to(&a_progress).key(a_site).payload("7")).map_err(|(e, _)| e).unwrap();
        own.commit_transaction(Duration::from_secs(30)).expect("relay A advances its own progress");
        // B's transactional id: initialising it would fence B's producer.
        let e = transactional(format!("{ns}orelink-edge-{b_site}")).init_transactions(Duration::from_secs(30)).expect_err("relay A must not fence relay B");
        assert_eq!(code(&e), Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed), "{e}");
        // B's progress topic: not read.
        let e = read_first(&a, &format!("{ns}orelink-edge-{a_site}-progress"), &b_progress).expect_err("relay A must not read relay B's progress");
        assert_eq!(code(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    })
    .await
    .unwrap();
    // Nor written: the record is refused, never appended.
    let writer: FutureProducer = as_user_cfg(&env.cfg.kafka.brokers, Some((&a_user, users[&a_user].expose()))).create().unwrap();
    let sent = writer.send(FutureRecord::<str, str>::to(&b_progress).key(b_site).payload("999999"), Duration::from_secs(10)).await.map(|_| ()).map_err(|(e, _)| code(&e));
    assert_eq!(sent, Err(Some(RDKafkaErrorCode::TopicAuthorizationFailed)));
    assert!(env.read_topic(&b_progress).await.is_empty(), "relay A advanced relay B's progress");
    assert_eq!(env.read_topic(&a_progress).await.len(), 1);
}

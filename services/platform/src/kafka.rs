//! Kafka client settings shared by every role.

use crate::config::KafkaSettings;
use rdkafka::ClientConfig;

/// librdkafka's key for the group member timeout (`kafka.session_timeout_ms`),
/// named once.
const MEMBER_TIMEOUT_KEY: &str = "session.timeout.ms";

impl KafkaSettings {
    /// Base client config: brokers, security, client id `<client_id>-<role>`.
    pub fn client_config(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("security.protocol", &self.security_protocol)
            .set("socket.timeout.ms", self.socket_timeout_ms.to_string());
        if self.security_protocol.starts_with("sasl") {
            c.set("sasl.mechanism", &self.sasl_mechanism)
                .set("sasl.username", &self.username)
                .set("sasl.password", self.password.expose());
        }
        c
    }

    /// How long an exactly-once loop waits for a round's transaction to end
    /// before it gives the round up: two socket timeouts, each request of a
    /// transaction (offsets, flush, commit) being bounded by one once the
    /// cluster answers at all.
    pub fn stuck_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2 * self.socket_timeout_ms)
    }

    /// An idempotent producer's config: no duplicates or reordering from retries.
    pub fn producer_config(&self, role: &str) -> ClientConfig {
        let mut c = self.client_config(role);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("linger.ms", "5")
            .set("compression.type", &self.compression)
            // Java's partitioner for every hub writer: the market topic's
            // writers (doors, router, Kafka clients) must put a family's
            // events in the same partition, its one order.
            .set("partitioner", "murmur2_random");
        c
    }

    /// A transactional producer's config. `transactional_id` must be stable per
    /// instance (it fences the zombie of a restarted one).
    pub fn transactional_config(&self, role: &str, transactional_id: &str, timeout: std::time::Duration) -> ClientConfig {
        let mut c = self.producer_config(role);
        c.set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", timeout.as_millis().to_string())
            // Right after a commit the broker may still be writing markers and answers
            // CONCURRENT_TRANSACTIONS; the default 100 ms backoff would add that to the next transaction.
            .set("retry.backoff.ms", "5");
        c
    }

    /// A consumer whose partitions are assigned by hand (replays, probes,
    /// streams): it reads committed data only and commits nothing. librdkafka
    /// still wants a `group.id`; the group is never joined.
    pub fn reader_config(&self, role: &str, group: &str) -> ClientConfig {
        let mut c = self.client_config(role);
        c.set("group.id", group).set("enable.auto.commit", "false").set("isolation.level", "read_committed");
        c
    }

    /// `consumer_config` for instance `instance` of a role, as a static member
    /// of its group (KIP-345, `group.instance.id`): a restarted instance takes
    /// its partitions back at once, with no rebalance and without waiting out
    /// the member timeout (`session_timeout_ms`) for its dead predecessor, which it fences. A static
    /// member does not leave its group when it stops, so a partition of an
    /// instance that does not come back moves after `session_timeout_ms`.
    pub fn member_config(&self, role: &str, group: &str, instance: &str) -> ClientConfig {
        let mut c = self.consumer_config(role, group);
        // KIP-848 fences the restarted member, not the dead one: no static id there.
        if self.group_protocol == "classic" {
            c.set("group.instance.id", format!("{role}-{instance}"));
        }
        c
    }

    /// A consumer that reads committed data only and stores offsets explicitly
    /// (after its output is delivered); the stored offsets are committed in the background.
    pub fn consumer_config(&self, role: &str, group: &str) -> ClientConfig {
        let mut c = self.client_config(role);
        c.set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.min.bytes", self.fetch_min_bytes.to_string())
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            // Once the prefetched queue passes its threshold (64 MiB), librdkafka
            // postpones the next fetch by this, 1 s by default: a role that
            // drains a backlog faster than that sat idle for most of each
            // second (the matcher, flat out, for 0.3-0.5 s at a time).
            .set("fetch.queue.backoff.ms", "10");
        if self.group_protocol == "consumer" {
            // KIP-848: the broker assigns, and keeps the member timeout and heartbeat.
            c.set("group.protocol", "consumer");
        } else {
            c.set("partition.assignment.strategy", "cooperative-sticky")
                .set(MEMBER_TIMEOUT_KEY, self.session_timeout_ms.to_string())
                .set("heartbeat.interval.ms", self.heartbeat_interval_ms.to_string());
        }
        c
    }
}

/// Where a consumer group stands on one partition of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    /// The high watermark: one past the last offset written.
    pub end: i64,
    /// The group's committed offset, 0 when it has none.
    pub committed: i64,
}

impl PartitionProgress {
    /// Offsets written that the group has not committed yet.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// How far the group of `consumer` (its `group.id`) has committed on every
/// partition of `topic`. Blocking: call it off the async runtime.
pub fn group_progress<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> rdkafka::error::KafkaResult<Vec<PartitionProgress>> {
    use rdkafka::consumer::Consumer;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (_, end) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        ends.push((p.id(), end));
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    Ok(ends
        .into_iter()
        .map(|(partition, end)| {
            let committed = committed
                .find_partition(topic, partition)
                .and_then(|e| if let rdkafka::Offset::Offset(o) = e.offset() { Some(o) } else { None })
                .unwrap_or(0);
            PartitionProgress { partition, end, committed }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::MEMBER_TIMEOUT_KEY;
    use crate::config::{Config, Sources};

    #[test]
    fn a_member_is_static_under_the_classic_protocol_only() {
        let mut cfg = Config::load(&Sources::default()).unwrap();
        let classic = cfg.kafka.member_config("fanout", "g", "a");
        assert_eq!(classic.get("group.instance.id"), Some("fanout-a"));
        assert_eq!(classic.get(MEMBER_TIMEOUT_KEY), Some("10000"));
        assert_eq!(classic.get("group.protocol"), None);
        cfg.kafka.group_protocol = "consumer".into();
        let kip848 = cfg.kafka.member_config("fanout", "g", "a");
        assert_eq!(kip848.get("group.protocol"), Some("consumer"));
        // The broker's: librdkafka refuses these with the consumer protocol.
        for key in ["group.instance.id", MEMBER_TIMEOUT_KEY, "heartbeat.interval.ms", "partition.assignment.strategy"] {
            assert_eq!(kip848.get(key), None, "{key}");
        }
    }
}

//! Kafka client settings shared by every role.

use crate::config::KafkaSettings;
use rdkafka::ClientConfig;

impl KafkaSettings {
    /// Base client config: brokers, security, client id `<client_id>-<role>`.
    pub fn client_config(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("security.protocol", &self.security_protocol);
        if self.security_protocol.starts_with("sasl") {
            c.set("sasl.mechanism", &self.sasl_mechanism)
                .set("sasl.username", &self.username)
                .set("sasl.password", self.password.expose());
        }
        c
    }

    /// An idempotent producer's config: no duplicates or reordering from retries.
    pub fn producer_config(&self, role: &str) -> ClientConfig {
        let mut c = self.client_config(role);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("linger.ms", "5")
            .set("compression.type", "zstd");
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
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", self.session_timeout_ms.to_string());
        c
    }
}

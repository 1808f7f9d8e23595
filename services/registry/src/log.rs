//! The `_schemas` topic: the registry's only durable state.

use crate::store::{LogRecord, Store};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating {topic}: {code}")]
    Create { topic: String, code: RDKafkaErrorCode },
    #[error("{0}")]
    Task(String),
}

pub struct SchemaLog {
    producer: FutureProducer,
    topic: String,
}

impl SchemaLog {
    /// Makes sure the topic exists, then reads it to its end into a fresh store.
    pub async fn open(base: &ClientConfig, topic: &str) -> Result<(SchemaLog, Store), LogError> {
        // A broker that has just started may not have elected leaders yet: retry for a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut delay = Duration::from_millis(200);
        loop {
            match Self::try_open(base, topic).await {
                Ok(opened) => return Ok(opened),
                Err(LogError::Kafka(e)) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "schema store not readable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_open(base: &ClientConfig, topic: &str) -> Result<(SchemaLog, Store), LogError> {
        ensure_topic(base, topic).await?;
        let producer: FutureProducer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()?;
        let started = Instant::now();
        let (store, records) = {
            let base = base.clone();
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || restore(&base, &topic))
                .await
                .map_err(|e| LogError::Task(e.to_string()))??
        };
        tracing::info!(topic, records, elapsed_ms = started.elapsed().as_millis() as u64, "schema store restored");
        Ok((SchemaLog { producer, topic: topic.to_owned() }, store))
    }

    /// Appends records and returns once Kafka has them (acks=all).
    pub async fn append(&self, records: &[LogRecord]) -> Result<(), LogError> {
        for r in records {
            let key = r.key_bytes();
            let value = r.value_bytes();
            let mut rec = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic).key(&key).partition(0);
            if let Some(v) = &value {
                rec = rec.payload(v);
            }
            self.producer.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| LogError::Kafka(e))?;
        }
        Ok(())
    }
}

async fn ensure_topic(base: &ClientConfig, topic: &str) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> = base.create()?;
    let brokers = {
        let md = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
        md.brokers().len().max(1) as i32
    };
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(brokers.min(3)))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1");
    let res = admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(LogError::Create { topic: t, code }),
        }
    }
    Ok(())
}

fn restore(base: &ClientConfig, topic: &str) -> Result<(Store, usize), LogError> {
    let consumer: BaseConsumer = base.clone().set("enable.auto.commit", "false").set("group.id", "orelink-registry-restore").create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut store = Store::default();
    let mut count = 0usize;
    if high <= low {
        return Ok((store, 0));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                store.apply(m.key().unwrap_or_default(), m.payload());
                count += 1;
                if m.offset() + 1 >= high {
                    return Ok((store, count));
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if Instant::now() > deadline => return Err(LogError::Task(format!("reading {topic} to offset {high} took over 120 s"))),
            None => {
                // Compaction may have removed the tail records; stop once our position passed the end.
                let pos = consumer.position()?;
                if let Some(Offset::Offset(o)) = pos.find_partition(topic, 0).map(|p| p.offset()) && o >= high {
                    return Ok((store, count));
                }
            }
        }
    }
}

//! orelink-bench: the benchmarks that run through the real stack (`orelink
//! bench ...`), kept out of the role crates. They measure and report; they
//! assert nothing, and each run works in a namespace of its own.
//!
//! - `matcher`: matched end to end beside raw Kafka, the transaction floor,
//!   book restore, the stall after a crash, and after a lost Kafka node, and
//!   the books' memory over a long run;
//! - `view`: materialisation throughput and API latency.

pub mod matcher;
pub mod outlook;
pub mod view;

pub use matcher::{e2e, failover, floor, recovery, restore, soak};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

pub(crate) fn setup<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// A step's failure, named.
pub(crate) trait OrSetup<T> {
    fn or_setup(self, what: &str) -> Result<T, BenchError>;
}

impl<T, E: std::fmt::Display> OrSetup<T> for Result<T, E> {
    fn or_setup(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|e| BenchError::Setup(format!("{what}: {e}")))
    }
}

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod engine;
mod error;
mod handler;
mod headers;
mod partitioner;
mod pending;
mod policy;
mod record;
mod stats;
pub mod transport;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod unstable;

pub use engine::{
    DeadLetterLimit, DeadLetterTrip, Engine, EngineBuilder, Health, HealthIssue, HealthProbe,
    HealthStatus, KeyOrder, MissingTopics, Redelivery, ShutdownReport, ThreadFailure,
};
pub use error::{Error, KafkaCode, Result};
pub use handler::{Handler, Outcome};
pub use headers::{
    DeadReason, ATTEMPTS, DEAD_LETTERED_AT, DEAD_REASON, DUE_AT, ENQUEUED_AT, FIRST_RECEIVED_AT,
    GROUP, HELD, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC, REASON, REPLAYED_FROM,
    REPLAY_COUNT,
};
pub use policy::{Backoff, RetryPolicy};
pub use record::{Delivered, Header, OutRecord, Partitioning, Record, Topic, TopicPartition};
/// The rustls this crate is built with (0.23), for
/// [`KafkaConfig::tls_config`].
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use rustls;
pub use stats::{DeadLettered, Stats};
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use transport::kafka::{
    Acks, Compression, KafkaConfig, KafkaTransport, Sasl, SaslMechanism, SecurityProtocol, Token,
    TokenProvider, UnsecuredJwt,
};
pub use transport::memory::MemoryBroker;

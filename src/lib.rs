#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod clock;
mod consumer;
mod engine;
mod error;
mod handler;
mod headers;
mod offsets;
mod partitioner;
mod pending;
mod policy;
mod pool;
mod record;
mod relay;
mod stats;
mod transport;

pub use engine::{Engine, EngineBuilder};
pub use error::{Error, KafkaCode, Result};
pub use handler::{Handler, Outcome};
pub use headers::{
    DeadReason, ATTEMPTS, DEAD_REASON, ENQUEUED_AT, FIRST_RECEIVED_AT, ORIGIN_OFFSET,
    ORIGIN_PARTITION, ORIGIN_TOPIC, REASON,
};
pub use partitioner::{murmur2, partition_for_key};
pub use pending::{Completer, Pending};
pub use policy::{Backoff, RetryPolicy};
pub use record::{Delivered, Header, OutRecord, Partitioning, Record, TopicPartition};
pub use stats::{DeadLettered, Stats};
pub use transport::kafka::{Acks, Compression, KafkaConfig, KafkaTransport};
pub use transport::memory::MemoryBroker;
pub use transport::{Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, Producer, Transport};

//! Non-blocking retries for Kafka consumers. See the README for the whole story.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod partitioner;
mod record;
mod transport;

pub use error::{Error, Result};
pub use partitioner::{murmur2, partition_for_key};
pub use record::{Delivered, Header, OutRecord, Partitioning, Record, TopicPartition};
pub use transport::kafka::{KafkaConfig, KafkaTransport};
pub use transport::memory::MemoryBroker;
pub use transport::{Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, Producer, Transport};

//! Kafka transport: a synchronous client over `std::net::TcpStream` built on
//! the `kafka-protocol` codec. See `shared/kafka-wire-notes.md` for the
//! protocol corners handled here.

pub(crate) mod assignor;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod conn;
pub(crate) mod errors;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod fetch;
pub(crate) mod group;
pub(crate) mod producer;
pub(crate) mod properties;
pub(crate) mod reader;
pub(crate) mod records;
pub(crate) mod retry;
pub(crate) mod sasl;
pub(crate) mod security;
pub(crate) mod tls;
mod topic_config;

use std::sync::Arc;

pub use config::{Acks, Compression, KafkaConfig};
pub use sasl::{Sasl, SaslMechanism, Token, TokenProvider, UnsecuredJwt};
pub use security::SecurityProtocol;

use crate::error::Result;
use crate::transport::{Consumer, ConsumerConfig, Producer, Reader, Retention, Transport};
use client::Client;

/// The Kafka transport: group consumers, an acknowledged producer and topic
/// admin over a synchronous client (`std::net::TcpStream`, no async runtime).
///
/// ```no_run
/// use kafka_retry::{transport::Transport, KafkaConfig, KafkaTransport};
/// let kafka = KafkaTransport::connect(KafkaConfig::new("127.0.0.1:9092"))?;
/// kafka.create_topic("orders", 3, None)?;
/// assert_eq!(kafka.partition_count("orders")?, Some(3));
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KafkaTransport {
    client: Arc<Client>,
}

impl KafkaTransport {
    /// Connects to the first reachable bootstrap broker (TCP, then
    /// ApiVersions to pick protocol versions, then Metadata for the broker
    /// list). An unreachable bootstrap fails within `connect_timeout` per
    /// address, with an error naming every address and its cause.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use kafka_retry::{KafkaConfig, KafkaTransport};
    /// let config = KafkaConfig::new("127.0.0.1:9092").connect_timeout(Duration::from_secs(3));
    /// let kafka = KafkaTransport::connect(config)?;
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn connect(config: KafkaConfig) -> Result<Self> {
        Ok(KafkaTransport {
            client: Client::bootstrap(config)?,
        })
    }

    /// [`KafkaTransport::connect`] with default settings and the bootstrap
    /// list `addr` (`"host:port"`, comma-separated for several).
    ///
    /// ```no_run
    /// let kafka = kafka_retry::KafkaTransport::bootstrap("127.0.0.1:9092")?;
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn bootstrap(addr: &str) -> Result<Self> {
        Self::connect(KafkaConfig::new(addr))
    }

    /// The settings this transport runs with.
    pub fn config(&self) -> &KafkaConfig {
        self.client.config()
    }

    /// The protocol version picked for each API we use with the bootstrap
    /// broker, e.g. `("Produce", Some(11))`; `None` when the broker has no
    /// version in common with us. For diagnostics.
    ///
    /// ```no_run
    /// let kafka = kafka_retry::KafkaTransport::bootstrap("127.0.0.1:9092")?;
    /// for (api, version) in kafka.api_versions() {
    ///     println!("{api}: {version:?}");
    /// }
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn api_versions(&self) -> Vec<(String, Option<i16>)> {
        self.client
            .api_versions()
            .iter()
            .map(|(k, v)| (conn::api_name(*k), *v))
            .collect()
    }
}

impl Transport for KafkaTransport {
    fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(group::GroupConsumer::new(
            self.client.clone(),
            config,
        )?))
    }

    fn producer(&self) -> Result<Arc<dyn Producer>> {
        Ok(Arc::new(producer::KafkaProducer::new(self.client.clone())?))
    }

    fn engine_producer(&self) -> Result<Arc<dyn Producer>> {
        let codec = self.client.config().engine_compression;
        Ok(Arc::new(producer::KafkaProducer::with_compression(
            self.client.clone(),
            codec,
        )?))
    }

    fn create_topic(&self, topic: &str, partitions: i32, replication: Option<i16>) -> Result<()> {
        self.client.create_topic(topic, partitions, replication)
    }

    fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        self.client.partition_count(topic)
    }

    fn reader(&self) -> Result<Box<dyn Reader>> {
        Ok(Box::new(reader::KafkaReader::new(self.client.clone())))
    }

    fn retention(&self, topic: &str) -> Result<Option<Retention>> {
        self.client.retention(topic)
    }
}

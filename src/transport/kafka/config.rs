//! Settings of the Kafka transport.

use std::path::PathBuf;
use std::time::Duration;

use super::sasl::Sasl;
use super::security::SecurityProtocol;
use super::tls::{Pem, TlsSettings};
use crate::error::{Error, Result};
use crate::transport::IsolationLevel;

/// The codec's enum is the public one (one list of codecs, no mapping).
pub use super::records::Compression;

/// How many replicas must hold a produced batch before the broker answers.
///
/// There is no `acks=0`: the engine counts a record as done only once the
/// broker acknowledged its copy, and an `acks=0` Produce gets no reply at
/// all, so there would be no offset to report and no loss to detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Acks {
    /// Every in-sync replica (`acks=all`, `-1`): survives the leader's loss.
    #[default]
    All,
    /// The partition leader only (`acks=1`): lost if the leader dies before
    /// followers copy it.
    Leader,
}

impl Acks {
    /// The value of ProduceRequest's `acks` field.
    pub(crate) fn wire(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
        }
    }
}

/// Kafka client settings: typed setters, or Java / librdkafka property
/// names through [`KafkaConfig::from_properties`] and
/// [`KafkaConfig::from_properties_file`] (a `client.properties` file). TLS:
/// [`KafkaConfig::security_protocol`] with the `ssl_*` setters; SASL:
/// [`KafkaConfig::sasl`]. `Debug` shows no private key, password or token.
///
/// ```
/// use std::time::Duration;
/// let config = kafka_retry::KafkaConfig::new("127.0.0.1:9092,127.0.0.1:9093")
///     .client_id("billing")
///     .request_timeout(Duration::from_secs(10));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub(crate) bootstrap: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_retries: u32,
    pub(crate) delivery_timeout: Duration,
    pub(crate) acks: Acks,
    pub(crate) compression: Compression,
    pub(crate) engine_compression: Compression,
    pub(crate) linger: Duration,
    pub(crate) batch_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) idempotence: bool,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) fetch_min_bytes: i32,
    pub(crate) partition_fetch_max_bytes: i32,
    pub(crate) fetch_ahead: bool,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) metadata_max_age: Duration,
    pub(crate) isolation_level: IsolationLevel,
    pub(crate) security_protocol: SecurityProtocol,
    pub(crate) sasl: Option<Sasl>,
    pub(crate) tls: TlsSettings,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap: Vec::new(),
            client_id: "kafka-retry".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            max_retries: 10,
            delivery_timeout: Duration::from_secs(120),
            acks: Acks::All,
            compression: Compression::None,
            engine_compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            batch_size: 1024 * 1024,
            max_in_flight: 5,
            idempotence: true,
            fetch_max_bytes: 50 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            partition_fetch_max_bytes: 1024 * 1024,
            fetch_ahead: true,
            heartbeat_interval: None,
            metadata_max_age: Duration::from_secs(5 * 60),
            isolation_level: IsolationLevel::ReadUncommitted,
            security_protocol: SecurityProtocol::Plaintext,
            sasl: None,
            tls: TlsSettings::default(),
        }
    }
}

impl KafkaConfig {
    /// Settings for the brokers in `bootstrap`, a comma-separated list of
    /// `host:port` (`"k1:9092,k2:9092"`); the rest is default.
    ///
    /// ```
    /// let config = kafka_retry::KafkaConfig::new("127.0.0.1:9092");
    /// # let _ = config;
    /// ```
    pub fn new(bootstrap: impl AsRef<str>) -> Self {
        KafkaConfig::default().bootstrap(bootstrap)
    }

    /// Replaces the bootstrap list (comma-separated `host:port`). Any broker
    /// of the cluster will do; the others are found through metadata.
    /// Defaults to an empty list, which [`KafkaConfig::validate`] rejects.
    pub fn bootstrap(mut self, bootstrap: impl AsRef<str>) -> Self {
        self.bootstrap = bootstrap
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self
    }

    /// The bootstrap list, as set.
    ///
    /// ```
    /// let config = kafka_retry::KafkaConfig::new("k1:9092, k2:9092");
    /// assert_eq!(config.bootstrap_servers(), ["k1:9092", "k2:9092"]);
    /// ```
    pub fn bootstrap_servers(&self) -> &[String] {
        &self.bootstrap
    }

    /// Client id sent in every request header (broker logs and quotas).
    /// Defaults to `"kafka-retry"`.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Time allowed for one TCP connect plus the ApiVersions handshake and,
    /// with SASL, the authentication exchange. Defaults to 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one request's reply (also sent as the Produce and
    /// CreateTopics `timeout_ms`). Defaults to 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Pause before retrying after a retriable error or a dropped connection.
    /// Defaults to 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// How many times a retriable error (leader moved, connection dropped,
    /// request timed out) is retried before it is returned. Defaults to 10.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Upper bound on the time one `send` / `send_batch` spends retrying:
    /// no new attempt starts after it (an attempt under way still finishes,
    /// so allow for one `request_timeout` more). Defaults to 120 s, as
    /// Java's `delivery.timeout.ms`.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Produce acknowledgements: [`Acks::All`] (every in-sync replica) or
    /// [`Acks::Leader`]. Defaults to [`Acks::All`].
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Compression of produced batches. Defaults to [`Compression::None`].
    /// An engine's own writes follow [`KafkaConfig::engine_compression`]
    /// instead.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Compression of an engine's own writes: its retry copies, the
    /// records its relay writes back to their origin topics, and its dead
    /// letters (the producer of
    /// [`Transport::engine_producer`](crate::transport::Transport::engine_producer)).
    /// Defaults to [`Compression::Lz4`]; [`Compression::None`] turns it off.
    ///
    /// Why a default other than Kafka's none: these records are small and
    /// each carries the same seven `retry.*` headers, so they compress
    /// well, and a broker spends less on them. Measured on Tansu at 10%
    /// retries (README, "The retry path on Tansu"): broker CPU per record
    /// about halved, the engine about 30% faster. Every maintained
    /// Kafka client reads lz4 (kafka-python needs its `lz4` package), and
    /// a topic with a `compression.type` of its own is re-encoded by the
    /// broker as for any producer.
    ///
    /// ```
    /// use kafka_retry::{Compression, KafkaConfig};
    /// let config = KafkaConfig::new("127.0.0.1:9092").engine_compression(Compression::None);
    /// # let _ = config;
    /// ```
    pub fn engine_compression(mut self, compression: Compression) -> Self {
        self.engine_compression = compression;
        self
    }

    /// How long the producer waits for more concurrent `send` calls to share
    /// a Produce request. Defaults to 5 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Upper bound, in bytes before compression, of one partition's record
    /// batch in a Produce request (keep it under the broker's
    /// `message.max.bytes`). Defaults to 1 MiB.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    /// Most Produce requests the producer keeps unanswered on one broker
    /// connection, like Java's `max.in.flight.requests.per.connection`:
    /// while the broker works on one request, the producer encodes and
    /// writes the next ones.
    ///
    /// Ordering: without an idempotent producer, a request that fails with
    /// a retriable error (leader moved, timeout, dropped connection) is
    /// retried after later requests to the same partition may already have
    /// been written, so with more than one in flight a retried record can
    /// land after records sent after it. New records of a partition wait
    /// while that partition has records waiting to be retried, but requests
    /// already in flight cannot be held back. `1` keeps each partition in
    /// the order records were sent, at the cost of one round trip per
    /// request. Records that are retried by the caller (or the engine's
    /// retry topic) leave the order anyway. Defaults to 5.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// The idempotent producer, like Java's `enable.idempotence` (on by
    /// default, as in Java since 3.0). The producer asks any broker for a
    /// producer id (InitProducerId) and numbers each partition's records;
    /// the broker then writes a batch that is retried after a lost
    /// acknowledgement once (a duplicate is answered as a success), and,
    /// with up to 5 requests in flight, refuses a batch that would land
    /// after a gap, so each partition keeps the order records were sent in
    /// even across retries (retried batches are resent in sequence order).
    ///
    /// Requires `max_in_flight` at most 5 (more is a configuration error);
    /// with [`Acks::Leader`] the producer is not idempotent (as Java does
    /// when `enable.idempotence` is left at its default). Errors: a
    /// duplicate sequence is success; an out-of-order sequence behind an
    /// unresolved earlier batch is retried; an out-of-order sequence of the
    /// next expected batch, or an unknown producer id, gets a new producer
    /// id (sequences restart at 0) and is retried; an invalid epoch or a
    /// fenced producer fails the batch and the producer takes a new id for
    /// later batches. A batch that fails for good after being sent (out of
    /// retries or time) also makes the producer take a new id. Guarantee:
    /// exactly-once writes per producer session and partition, not across
    /// producer restarts (no transactions). Turn it off for brokers that
    /// refuse InitProducerId (`enable.idempotence=false`).
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    /// Most bytes one Fetch reply may carry. Defaults to 50 MiB.
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.fetch_max_bytes = bytes;
        self
    }

    /// How long the broker may hold a Fetch waiting for `fetch_min_bytes`.
    /// Defaults to 500 ms.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }

    /// Bytes a Fetch waits for before the broker replies. Defaults to 1.
    pub fn fetch_min_bytes(mut self, bytes: i32) -> Self {
        self.fetch_min_bytes = bytes;
        self
    }

    /// Most bytes one partition contributes to a Fetch reply. Defaults to 1 MiB.
    pub fn partition_fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.partition_fetch_max_bytes = bytes;
        self
    }

    /// Whether a group consumer sends a partition's next Fetch as soon as
    /// a poll hands out the last of its buffered records, as the Java
    /// client does, so the broker's round trip overlaps the caller's work
    /// on them instead of adding to it. Defaults to on.
    ///
    /// Only while the broker holds more records for the partition: at the
    /// log end the consumer long-polls as without it, so what arrives
    /// there comes no later. The reply is read once fewer than
    /// `max_poll_records` records are left to hand out, so each partition
    /// holds one reply and has at most one more on the way. Off, a Fetch
    /// goes out only once every buffered record is handed out.
    pub fn fetch_ahead(mut self, on: bool) -> Self {
        self.fetch_ahead = on;
        self
    }

    /// Heartbeat period of group consumers; `None` uses a third of the
    /// session timeout. Defaults to `None`.
    pub fn heartbeat_interval(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How often a group consumer that leads its group re-reads the partition
    /// counts of the group's topics, like Java's `metadata.max.age.ms`: when a
    /// topic gained partitions (or a subscribed topic now exists), the leader
    /// starts a rebalance so that the new partitions get an owner. Followers
    /// never check. Defaults to 5 min.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    /// The least isolation level of this transport's consumers
    /// (`isolation.level` in [`KafkaConfig::from_properties`]): with
    /// [`IsolationLevel::ReadCommitted`] every consumer reads committed
    /// records only, whatever its own
    /// [`ConsumerConfig::isolation_level`](crate::transport::ConsumerConfig::isolation_level)
    /// (or [`EngineBuilder::isolation_level`](crate::EngineBuilder::isolation_level))
    /// says; with the default `ReadUncommitted` the consumer's setting
    /// decides. A floor rather than an override, so that a properties file
    /// asking for read_committed is never silently downgraded.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// How connections are secured: [`SecurityProtocol::Plaintext`],
    /// `Ssl`, `SaslPlaintext` or `SaslSsl` (`security.protocol`). The SASL
    /// ones need [`KafkaConfig::sasl`]. Defaults to `Plaintext`.
    pub fn security_protocol(mut self, protocol: SecurityProtocol) -> Self {
        self.security_protocol = protocol;
        self
    }

    /// SASL mechanism and credentials, for `SaslPlaintext` and `SaslSsl`.
    /// Defaults to none.
    pub fn sasl(mut self, sasl: Sasl) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// Trusts the CA certificates in this PEM file (or every PEM file of
    /// this directory) instead of the system trust store
    /// (`ssl.ca.location`). Replaces [`KafkaConfig::ssl_ca_pem`]. Defaults
    /// to the system trust store.
    ///
    /// ```
    /// use kafka_retry::{KafkaConfig, SecurityProtocol};
    /// let config = KafkaConfig::new("broker:9093")
    ///     .security_protocol(SecurityProtocol::Ssl)
    ///     .ssl_ca_location("/etc/kafka/ca.pem");
    /// # let _ = config;
    /// ```
    pub fn ssl_ca_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(Pem::File(path.into()));
        self.tls.changed();
        self
    }

    /// Trusts the CA certificates in this PEM text (`ssl.ca.pem`). Replaces
    /// [`KafkaConfig::ssl_ca_location`]. Defaults to the system trust store.
    pub fn ssl_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls.ca = Some(Pem::Text(pem.into()));
        self.tls.changed();
        self
    }

    /// Mutual TLS: the client certificate chain (leaf first) in this PEM
    /// file (`ssl.certificate.location`); needs a key
    /// ([`KafkaConfig::ssl_key_location`] or [`KafkaConfig::ssl_key_pem`]).
    /// Defaults to no client certificate.
    ///
    /// ```
    /// use kafka_retry::{KafkaConfig, SecurityProtocol};
    /// let config = KafkaConfig::new("broker:9093")
    ///     .security_protocol(SecurityProtocol::Ssl)
    ///     .ssl_ca_location("ca.pem")
    ///     .ssl_certificate_location("client.pem")
    ///     .ssl_key_location("client.key");
    /// # let _ = config;
    /// ```
    pub fn ssl_certificate_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.cert = Some(Pem::File(path.into()));
        self.tls.changed();
        self
    }

    /// Mutual TLS: the client certificate chain as PEM text
    /// (`ssl.certificate.pem`). Defaults to no client certificate.
    pub fn ssl_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls.cert = Some(Pem::Text(pem.into()));
        self.tls.changed();
        self
    }

    /// Mutual TLS: the client certificate's private key in this PEM file
    /// (`ssl.key.location`): PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`), not
    /// encrypted. Checked against the certificate when the config is
    /// validated. Defaults to none.
    pub fn ssl_key_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.key = Some(Pem::File(path.into()));
        self.tls.changed();
        self
    }

    /// Mutual TLS: the private key as PEM text (`ssl.key.pem`); never shown
    /// by `Debug`. Defaults to none.
    pub fn ssl_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls.key = Some(Pem::Text(pem.into()));
        self.tls.changed();
        self
    }

    /// Whether the broker's certificate must name the host we connect to
    /// (a DNS name, or an IP address in its IP SANs). `false` is
    /// `ssl.endpoint.identification.algorithm=none`: the certificate chain,
    /// validity and signatures are still checked, but any certificate of a
    /// trusted CA is accepted for any broker; a warning is logged once.
    /// Defaults to `true` (`https`).
    pub fn ssl_hostname_verification(mut self, verify: bool) -> Self {
        self.tls.no_hostname_check = !verify;
        self.tls.changed();
        self
    }

    /// Uses this rustls client config for TLS as it is, instead of building
    /// one from the `ssl_*` settings (which are then ignored): your own
    /// verifier, provider, client certificate resolver, ... The crate's
    /// rustls is re-exported as [`kafka_retry::rustls`](crate::rustls)
    /// (rustls 0.23). Defaults to none.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kafka_retry::{rustls, KafkaConfig, SecurityProtocol};
    /// # fn my_rustls_config() -> rustls::ClientConfig { unimplemented!() }
    /// # fn run() {
    /// let tls: rustls::ClientConfig = my_rustls_config();
    /// let config = KafkaConfig::new("broker:9093")
    ///     .security_protocol(SecurityProtocol::Ssl)
    ///     .tls_config(Arc::new(tls));
    /// # let _ = config;
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.custom = Some(config);
        self.tls.changed();
        self
    }

    /// Checks the settings; [`KafkaTransport::connect`](crate::KafkaTransport::connect)
    /// calls it. The error names the bad field.
    ///
    /// ```
    /// let err = kafka_retry::KafkaConfig::new("").validate().unwrap_err();
    /// assert!(err.to_string().contains("bootstrap"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::config("bootstrap", "no broker address given"));
        }
        for addr in &self.bootstrap {
            let port_ok = addr
                .rsplit_once(':')
                .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !port_ok {
                return Err(Error::config(
                    "bootstrap",
                    format!("`{addr}` is not host:port"),
                ));
            }
        }
        if self.client_id.is_empty() || self.client_id.len() > i16::MAX as usize {
            return Err(Error::config("client_id", "must be 1..=32767 bytes"));
        }
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("delivery_timeout", self.delivery_timeout),
        ];
        for (field, d) in positive {
            if d.is_zero() {
                return Err(Error::config(field, "must be more than zero"));
            }
        }
        // Sent as i32 milliseconds (Produce/CreateTopics timeout_ms, Fetch max_wait_ms).
        let as_ms = [
            ("request_timeout", self.request_timeout),
            ("fetch_max_wait", self.fetch_max_wait),
        ];
        for (field, d) in as_ms {
            if d.as_millis() > i32::MAX as u128 {
                return Err(Error::config(field, "must fit in i32 milliseconds"));
            }
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be more than zero"));
        }
        if self.max_in_flight == 0 {
            return Err(Error::config("max_in_flight", "must be more than zero"));
        }
        if self.idempotence && self.max_in_flight > 5 {
            return Err(Error::config(
                "max_in_flight",
                "must be at most 5 with idempotence (the broker checks the last 5 \
                 batches of a producer for duplicates); or set idempotence(false)",
            ));
        }
        let ints = [
            ("fetch_max_bytes", self.fetch_max_bytes),
            ("fetch_min_bytes", self.fetch_min_bytes),
            ("partition_fetch_max_bytes", self.partition_fetch_max_bytes),
        ];
        for (field, v) in ints {
            if v <= 0 {
                return Err(Error::config(field, "must be more than zero"));
            }
        }
        if self.heartbeat_interval == Some(Duration::ZERO) {
            return Err(Error::config(
                "heartbeat_interval",
                "must be more than zero",
            ));
        }
        if self.metadata_max_age.is_zero() {
            // Zero would mean a Metadata request on every fetch round.
            return Err(Error::config("metadata_max_age", "must be more than zero"));
        }
        if self.security_protocol.uses_tls() {
            // Files read, PEM parsed, key checked against the certificate,
            // a crypto provider found: errors name the setting and file.
            self.tls.check()?;
        } else if self.tls.any_set() {
            // Never connect in the clear when TLS settings say otherwise.
            return Err(Error::config(
                "security_protocol",
                format!(
                    "TLS settings (CA, client certificate or rustls config) are set, but \
                     security.protocol is {}: use SSL or SASL_SSL",
                    self.security_protocol
                ),
            ));
        }
        match (self.security_protocol.uses_sasl(), &self.sasl) {
            (true, None) => {
                return Err(Error::config(
                    "sasl",
                    format!(
                        "security protocol {} needs a SASL mechanism and credentials",
                        self.security_protocol
                    ),
                ))
            }
            (false, Some(s)) => {
                return Err(Error::config(
                    "security_protocol",
                    format!(
                    "{} does not authenticate, yet SASL {} is set: use SASL_SSL or SASL_PLAINTEXT",
                    self.security_protocol,
                    s.mechanism()
                ),
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bootstrap_list() {
        let c = KafkaConfig::new(" a:1 , b:2,,");
        assert_eq!(c.bootstrap, vec!["a:1".to_string(), "b:2".to_string()]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_names_the_field() {
        let field = |c: KafkaConfig| match c.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(KafkaConfig::new("")), "bootstrap");
        assert_eq!(field(KafkaConfig::new("localhost")), "bootstrap");
        assert_eq!(
            field(KafkaConfig::new("a:1").request_timeout(Duration::ZERO)),
            "request_timeout"
        );
        assert_eq!(field(KafkaConfig::new("a:1").batch_size(0)), "batch_size");
        assert_eq!(
            field(KafkaConfig::new("a:1").max_in_flight(0)),
            "max_in_flight"
        );
        assert_eq!(
            field(KafkaConfig::new("a:1").metadata_max_age(Duration::ZERO)),
            "metadata_max_age"
        );
    }
}

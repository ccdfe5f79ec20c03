//! The crate's error type.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::engine::ShutdownReport;

/// Everything that can go wrong in `kafka-retry`.
///
/// `Error` is `Clone` (an I/O cause is shared behind an [`Arc`]), so one
/// failure can answer every record of a failed request.
///
/// # Display and `source()`
///
/// `Display` is self-contained and of the form "context: inner", e.g.
/// `connect 127.0.0.1:9092: Connection refused (os error 111)`: it already
/// includes the cause. So [`std::error::Error::source`] returns `None` for
/// every variant, and an error chain (`anyhow`'s `{:#}`, a loop over
/// `source()`) prints the cause once, not twice. The I/O cause is still
/// reachable through [`Error::io_error`] and [`Error::io_kind`].
///
/// ```
/// use std::error::Error as _;
/// let e = kafka_retry::Error::Closed;
/// assert!(e.source().is_none());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// A builder or policy field has a bad value; names the field.
    Config {
        /// The field, e.g. `"workers"`.
        field: &'static str,
        /// Why the value is bad.
        reason: String,
    },
    /// I/O with a broker failed: what we were doing, and the cause.
    Io {
        /// What was being done, e.g. `"connect 127.0.0.1:9092"`.
        context: String,
        /// The I/O error, shared so that `Error` can be cloned.
        source: Arc<io::Error>,
    },
    /// The broker answered with a Kafka error code.
    Kafka {
        /// The API and target, e.g. `"Produce orders-3"`.
        context: String,
        /// Kafka's error code; [`KafkaCode::name`] gives Kafka's name for it.
        code: KafkaCode,
    },
    /// The broker spoke something we could not decode or do not support.
    Protocol(String),
    /// A topic does not exist.
    UnknownTopic(String),
    /// A call did not complete in time.
    Timeout(String),
    /// The consumer lost its group membership or its partitions; rejoin.
    Rebalance(String),
    /// The transport or engine has been closed.
    Closed,
    /// A thread panicked or could not be started.
    Thread(String),
    /// Shutdown finished, but not everything: what was abandoned, left
    /// uncommitted or still running, in a [`ShutdownReport`].
    Shutdown(Box<ShutdownReport>),
    /// A broker refused SASL authentication: wrong credentials, a mechanism
    /// it does not enable, an expired or refused token, or a SCRAM server
    /// signature that does not verify. Not retriable: the same credentials
    /// will be refused again. Never carries a password or token.
    Auth {
        /// The SASL mechanism, e.g. `"SCRAM-SHA-512"`.
        mechanism: &'static str,
        /// The broker, `host:port`.
        broker: String,
        /// What went wrong, with the broker's own message when it sent one.
        message: String,
    },
    /// A TLS connection could not be set up: the broker's certificate was
    /// refused (untrusted, expired, another name), the broker refused ours,
    /// or the other end does not speak TLS. Not retriable: the settings or
    /// the broker's certificate must change.
    Tls {
        /// What was being done, e.g. `"TLS handshake with k1:9093"`.
        context: String,
        /// What went wrong and what to check.
        reason: String,
    },
}

/// A Kafka protocol error code, as a broker sends it in a reply's
/// `error_code` field (never 0, which means success).
///
/// ```
/// use kafka_retry::KafkaCode;
/// let c = KafkaCode::NOT_LEADER_OR_FOLLOWER;
/// assert_eq!(c.code(), 6);
/// assert_eq!(c.name(), "NOT_LEADER_OR_FOLLOWER");
/// assert!(c.is_retriable());
/// assert_eq!(KafkaCode::from(6), c);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KafkaCode(i16);

impl KafkaCode {
    /// -1: the broker failed in an unexpected way.
    pub const UNKNOWN_SERVER_ERROR: KafkaCode = KafkaCode(-1);
    /// 1: the requested offset is outside the partition's log.
    pub const OFFSET_OUT_OF_RANGE: KafkaCode = KafkaCode(1);
    /// 3: the broker does not host this topic or partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: KafkaCode = KafkaCode(3);
    /// 5: the partition has no leader right now (e.g. an election).
    pub const LEADER_NOT_AVAILABLE: KafkaCode = KafkaCode(5);
    /// 6: the broker is not the partition's leader.
    pub const NOT_LEADER_OR_FOLLOWER: KafkaCode = KafkaCode(6);
    /// 7: the broker timed out (a produce may still have been written).
    pub const REQUEST_TIMED_OUT: KafkaCode = KafkaCode(7);
    /// 13: the broker lost a connection while handling the request.
    pub const NETWORK_EXCEPTION: KafkaCode = KafkaCode(13);
    /// 14: the group coordinator is still loading the group.
    pub const COORDINATOR_LOAD_IN_PROGRESS: KafkaCode = KafkaCode(14);
    /// 15: no coordinator for the group right now.
    pub const COORDINATOR_NOT_AVAILABLE: KafkaCode = KafkaCode(15);
    /// 16: the broker is not the group's coordinator.
    pub const NOT_COORDINATOR: KafkaCode = KafkaCode(16);
    /// 19: fewer in-sync replicas than `min.insync.replicas`.
    pub const NOT_ENOUGH_REPLICAS: KafkaCode = KafkaCode(19);
    /// 20: written, but fewer in-sync replicas than required.
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: KafkaCode = KafkaCode(20);
    /// 22: the member's generation is not the group's.
    pub const ILLEGAL_GENERATION: KafkaCode = KafkaCode(22);
    /// 25: the coordinator does not know this member.
    pub const UNKNOWN_MEMBER_ID: KafkaCode = KafkaCode(25);
    /// 27: the group is rebalancing; rejoin.
    pub const REBALANCE_IN_PROGRESS: KafkaCode = KafkaCode(27);
    /// 35: the broker does not support this request version.
    pub const UNSUPPORTED_VERSION: KafkaCode = KafkaCode(35);
    /// 36: CreateTopics for a topic that exists.
    pub const TOPIC_ALREADY_EXISTS: KafkaCode = KafkaCode(36);
    /// 41: the broker is not the controller.
    pub const NOT_CONTROLLER: KafkaCode = KafkaCode(41);
    /// 74: the request's leader epoch is older than the broker's.
    pub const FENCED_LEADER_EPOCH: KafkaCode = KafkaCode(74);
    /// 75: the request's leader epoch is newer than the broker's.
    pub const UNKNOWN_LEADER_EPOCH: KafkaCode = KafkaCode(75);
    /// 79: JoinGroup needs the member id the reply carries; rejoin with it.
    pub const MEMBER_ID_REQUIRED: KafkaCode = KafkaCode(79);
    /// 87: the broker refused a record batch.
    pub const INVALID_RECORD: KafkaCode = KafkaCode(87);
    /// 100: the broker does not host this topic id.
    pub const UNKNOWN_TOPIC_ID: KafkaCode = KafkaCode(100);

    /// A code from the wire.
    pub const fn new(code: i16) -> KafkaCode {
        KafkaCode(code)
    }

    /// The number on the wire.
    pub const fn code(self) -> i16 {
        self.0
    }

    /// Kafka's name for the code, e.g. `"NOT_LEADER_OR_FOLLOWER"`;
    /// `"UNKNOWN"` for a code this crate does not know.
    pub fn name(self) -> &'static str {
        #[cfg(feature = "kafka")]
        return crate::transport::kafka::errors::code_name(self.0);
        // No Kafka client, no code table (and no Kafka errors to name).
        #[cfg(not(feature = "kafka"))]
        "UNKNOWN"
    }

    /// Whether Kafka marks the code retriable (Java's `RetriableException`):
    /// the same request may succeed later, possibly after a metadata or
    /// coordinator refresh. Group membership codes (22, 25, 27, 79) are not
    /// retriable in this sense, but recoverable by rejoining.
    pub fn is_retriable(self) -> bool {
        #[cfg(feature = "kafka")]
        return crate::transport::kafka::errors::code_is_retriable(self.0);
        #[cfg(not(feature = "kafka"))]
        false
    }

    /// Whether the code means the member must rejoin its group
    /// (22, 25, 27, 79).
    pub fn is_rejoin(self) -> bool {
        matches!(
            self,
            KafkaCode::ILLEGAL_GENERATION
                | KafkaCode::UNKNOWN_MEMBER_ID
                | KafkaCode::REBALANCE_IN_PROGRESS
                | KafkaCode::MEMBER_ID_REQUIRED
        )
    }
}

impl From<i16> for KafkaCode {
    fn from(code: i16) -> Self {
        KafkaCode(code)
    }
}

impl fmt::Display for KafkaCode {
    /// `6 (NOT_LEADER_OR_FOLLOWER)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

impl Error {
    /// A config error for `field`.
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }

    /// An I/O error with context.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))] // only the Kafka client does I/O
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// A Kafka error code with context (the API and target, e.g.
    /// `"Produce orders-3"`).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))] // only the Kafka client gets codes
    pub(crate) fn kafka(context: impl Into<String>, code: impl Into<KafkaCode>) -> Self {
        Error::Kafka {
            context: context.into(),
            code: code.into(),
        }
    }

    /// The Kafka error code, for [`Error::Kafka`].
    ///
    /// ```
    /// let e = kafka_retry::Error::Closed;
    /// assert_eq!(e.kafka_code(), None);
    /// ```
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The I/O cause, for [`Error::Io`].
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The kind of the I/O cause (e.g. `ConnectionRefused`), for
    /// [`Error::Io`].
    ///
    /// ```
    /// let e = kafka_retry::Error::Closed;
    /// assert_eq!(e.io_kind(), None);
    /// ```
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.io_error().map(io::Error::kind)
    }

    /// Whether retrying the same call later may succeed (connection drops,
    /// timeouts, leadership moves, retriable Kafka codes, and the group
    /// membership codes that a rejoin recovers from).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Timeout(_) | Error::Rebalance(_) => true,
            Error::Kafka { code, .. } => code.is_retriable() || code.is_rejoin(),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { field, reason } => write!(f, "invalid config `{field}`: {reason}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Kafka { context, code } => write!(f, "{context}: kafka error {code}"),
            Error::Protocol(m) => write!(f, "protocol: {m}"),
            Error::UnknownTopic(t) => write!(f, "unknown topic: {t}"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::Rebalance(m) => write!(f, "rebalance: {m}"),
            Error::Closed => write!(f, "closed"),
            Error::Thread(m) => write!(f, "thread: {m}"),
            Error::Shutdown(r) => write!(f, "shutdown: {r}"),
            Error::Auth {
                mechanism,
                broker,
                message,
            } => write!(
                f,
                "SASL {mechanism} authentication with {broker} failed: {message}"
            ),
            Error::Tls { context, reason } => write!(f, "{context}: {reason}"),
        }
    }
}

/// `source()` is `None` on purpose: `Display` already prints the cause
/// (see the type's docs).
impl std::error::Error for Error {}

/// Shorthand for `Result<T, kafka_retry::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn chain_prints_the_cause_once() {
        let e = Error::io(
            "connect 127.0.0.1:9",
            io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"),
        );
        // What anyhow's `{:#}` does: Display, then ": " + each source.
        let mut chain = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            chain.push_str(&format!(": {s}"));
            next = s.source();
        }
        assert_eq!(chain, "connect 127.0.0.1:9: connection refused");
        assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        let copy = e.clone();
        assert_eq!(copy.to_string(), e.to_string());
        assert_eq!(copy.io_kind(), e.io_kind());
    }

    #[test]
    #[cfg(feature = "kafka")] // the code table is the Kafka client's
    fn kafka_codes_have_names_and_classes() {
        let e = Error::kafka("Produce orders-3", KafkaCode::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(
            e.to_string(),
            "Produce orders-3: kafka error 6 (NOT_LEADER_OR_FOLLOWER)"
        );
        assert_eq!(e.kafka_code(), Some(KafkaCode::new(6)));
        assert!(e.is_retriable());
        assert!(Error::kafka("x", KafkaCode::REBALANCE_IN_PROGRESS).is_retriable());
        assert!(!Error::kafka("x", KafkaCode::INVALID_RECORD).is_retriable());
        assert_eq!(KafkaCode::new(9999).name(), "UNKNOWN");
    }
}

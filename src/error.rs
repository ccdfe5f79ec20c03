//! The crate's error type.

use std::fmt;
use std::io;

/// Everything that can go wrong in `kafka-retry`.
#[derive(Debug)]
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
        /// The I/O error.
        source: io::Error,
    },
    /// The broker answered with a Kafka error code.
    Kafka {
        /// The API and target, e.g. `"Produce orders-3"`.
        context: String,
        /// Kafka's error code.
        code: i16,
        /// Kafka's name for the code, e.g. `"NOT_LEADER_OR_FOLLOWER"`.
        name: String,
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
    /// Shutdown finished, but some work was not committed.
    Shutdown(String),
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
            source,
        }
    }

    /// Whether retrying the same call later may succeed (connection drops,
    /// timeouts, leadership moves, retriable Kafka codes).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Timeout(_) | Error::Rebalance(_) => true,
            Error::Kafka { code, .. } => matches!(
                code,
                3 | 5 | 6 | 7 | 13 | 14 | 15 | 16 | 19 | 20 | 22 | 25 | 27 | 41
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { field, reason } => write!(f, "invalid config `{field}`: {reason}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Kafka {
                context,
                code,
                name,
            } => write!(f, "{context}: kafka error {code} ({name})"),
            Error::Protocol(m) => write!(f, "protocol: {m}"),
            Error::UnknownTopic(t) => write!(f, "unknown topic: {t}"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::Rebalance(m) => write!(f, "rebalance: {m}"),
            Error::Closed => write!(f, "closed"),
            Error::Thread(m) => write!(f, "thread: {m}"),
            Error::Shutdown(m) => write!(f, "shutdown: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand for `Result<T, kafka_retry::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Kafka error codes turned into [`Error`]s.

use std::io;

use kafka_protocol::error::ResponseError;

use crate::error::{Error, Result};

/// Kafka's name of an error code, e.g. `NOT_LEADER_OR_FOLLOWER` for 6.
pub(crate) fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_CODE_{c}"),
        // The crate's variant names are Kafka's names in CamelCase.
        Some(e) => screaming_snake(&format!("{e:?}")),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `Error::Kafka` for `code`, with `context` naming the API and target
/// (e.g. `"Produce orders-3"`).
pub(crate) fn kafka_error(context: impl Into<String>, code: i16) -> Error {
    Error::Kafka {
        context: context.into(),
        code,
        name: code_name(code),
    }
}

/// `Ok` for code 0, else [`kafka_error`].
pub(crate) fn check(context: impl Into<String>, code: i16) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(kafka_error(context, code))
    }
}

/// Whether a Kafka code is worth retrying the same request for (after a
/// metadata refresh for the leader ones). Per Java's `RetriableException`.
pub(crate) fn is_retriable_code(code: i16) -> bool {
    match ResponseError::try_from_code(code) {
        None => false,
        Some(e) => e.is_retriable(),
    }
}

/// Codes after which the leader or topic may have moved: refresh metadata.
pub(crate) fn needs_metadata_refresh(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 13 | 74 | 75 | 100)
}

/// A copy of `e` (our `Error` holds an `io::Error`, which is not `Clone`),
/// for handing one failure to every record of a failed request.
pub(crate) fn clone_error(e: &Error) -> Error {
    match e {
        Error::Config { field, reason } => Error::Config {
            field,
            reason: reason.clone(),
        },
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        Error::Kafka {
            context,
            code,
            name,
        } => Error::Kafka {
            context: context.clone(),
            code: *code,
            name: name.clone(),
        },
        Error::Protocol(m) => Error::Protocol(m.clone()),
        Error::UnknownTopic(t) => Error::UnknownTopic(t.clone()),
        Error::Timeout(m) => Error::Timeout(m.clone()),
        Error::Rebalance(m) => Error::Rebalance(m.clone()),
        Error::Closed => Error::Closed,
        Error::Thread(m) => Error::Thread(m.clone()),
        Error::Shutdown(m) => Error::Shutdown(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kafka() {
        assert_eq!(code_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(code_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(code_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(code_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(code_name(9999), "UNKNOWN_CODE_9999");
    }

    #[test]
    fn kafka_error_displays_context_and_name() {
        let e = kafka_error("Produce orders-3", 6);
        assert_eq!(
            e.to_string(),
            "Produce orders-3: kafka error 6 (NOT_LEADER_OR_FOLLOWER)"
        );
        assert!(e.is_retriable());
        assert!(check("x", 0).is_ok());
        assert!(is_retriable_code(6) && !is_retriable_code(87));
    }
}

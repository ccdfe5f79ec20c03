//! The one table of Kafka error codes: names and "retriable" flags come
//! from `kafka_protocol::ResponseError` (Kafka's own list), looked up here
//! and nowhere else. [`KafkaCode`](crate::KafkaCode) calls into it; what the
//! client *does* about a code is [`retry::classify`](super::retry::classify).

use std::collections::HashMap;
use std::sync::OnceLock;

use kafka_protocol::error::ResponseError;

use crate::error::{Error, KafkaCode, Result};

/// Codes `ResponseError` knows, with Kafka's SCREAMING_SNAKE names, built
/// once from the crate's variant names (which are Kafka's names in
/// CamelCase).
fn table() -> &'static HashMap<i16, &'static str> {
    static TABLE: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (-1..=i16::from(u8::MAX))
            .filter_map(|code| match ResponseError::try_from_code(code) {
                None | Some(ResponseError::Unknown(_)) => None,
                Some(e) => {
                    let name: &'static str =
                        Box::leak(screaming_snake(&format!("{e:?}")).into_boxed_str());
                    Some((code, name))
                }
            })
            .collect()
    })
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

/// Kafka's name of an error code, e.g. `NOT_LEADER_OR_FOLLOWER` for 6;
/// `NONE` for 0, `UNKNOWN` for a code Kafka's list lacks.
pub(crate) fn code_name(code: i16) -> &'static str {
    if code == 0 {
        return "NONE";
    }
    table().get(&code).copied().unwrap_or("UNKNOWN")
}

/// Java's `RetriableException` flag for a code (false for 0 and unknown).
pub(crate) fn code_is_retriable(code: i16) -> bool {
    match ResponseError::try_from_code(code) {
        None => false,
        Some(e) => e.is_retriable(),
    }
}

/// `Ok` for code 0, else [`Error::Kafka`] with `context` naming the API and
/// target (e.g. `"Produce orders-3"`).
pub(crate) fn check(context: impl Into<String>, code: i16) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::kafka(context, code))
    }
}

/// Codes after which the leader or topic may have moved: refresh metadata.
pub(crate) fn needs_metadata_refresh(code: KafkaCode) -> bool {
    matches!(
        code,
        KafkaCode::UNKNOWN_TOPIC_OR_PARTITION
            | KafkaCode::LEADER_NOT_AVAILABLE
            | KafkaCode::NOT_LEADER_OR_FOLLOWER
            | KafkaCode::NETWORK_EXCEPTION
            | KafkaCode::FENCED_LEADER_EPOCH
            | KafkaCode::UNKNOWN_LEADER_EPOCH
            | KafkaCode::UNKNOWN_TOPIC_ID
    )
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
        assert_eq!(code_name(0), "NONE");
        assert_eq!(code_name(9999), "UNKNOWN");
    }

    /// Every named constant carries the name Kafka gives its number.
    #[test]
    fn constants_match_the_table() {
        let named = [
            (KafkaCode::UNKNOWN_SERVER_ERROR, "UNKNOWN_SERVER_ERROR"),
            (KafkaCode::OFFSET_OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE"),
            (
                KafkaCode::UNKNOWN_TOPIC_OR_PARTITION,
                "UNKNOWN_TOPIC_OR_PARTITION",
            ),
            (KafkaCode::LEADER_NOT_AVAILABLE, "LEADER_NOT_AVAILABLE"),
            (KafkaCode::NOT_LEADER_OR_FOLLOWER, "NOT_LEADER_OR_FOLLOWER"),
            (KafkaCode::REQUEST_TIMED_OUT, "REQUEST_TIMED_OUT"),
            (KafkaCode::NETWORK_EXCEPTION, "NETWORK_EXCEPTION"),
            (
                KafkaCode::COORDINATOR_LOAD_IN_PROGRESS,
                "COORDINATOR_LOAD_IN_PROGRESS",
            ),
            (
                KafkaCode::COORDINATOR_NOT_AVAILABLE,
                "COORDINATOR_NOT_AVAILABLE",
            ),
            (KafkaCode::NOT_COORDINATOR, "NOT_COORDINATOR"),
            (KafkaCode::NOT_ENOUGH_REPLICAS, "NOT_ENOUGH_REPLICAS"),
            (
                KafkaCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ),
            (KafkaCode::ILLEGAL_GENERATION, "ILLEGAL_GENERATION"),
            (KafkaCode::UNKNOWN_MEMBER_ID, "UNKNOWN_MEMBER_ID"),
            (KafkaCode::REBALANCE_IN_PROGRESS, "REBALANCE_IN_PROGRESS"),
            (KafkaCode::UNSUPPORTED_VERSION, "UNSUPPORTED_VERSION"),
            (KafkaCode::TOPIC_ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS"),
            (KafkaCode::NOT_CONTROLLER, "NOT_CONTROLLER"),
            (KafkaCode::FENCED_LEADER_EPOCH, "FENCED_LEADER_EPOCH"),
            (KafkaCode::UNKNOWN_LEADER_EPOCH, "UNKNOWN_LEADER_EPOCH"),
            (KafkaCode::MEMBER_ID_REQUIRED, "MEMBER_ID_REQUIRED"),
            (KafkaCode::INVALID_RECORD, "INVALID_RECORD"),
            (KafkaCode::UNKNOWN_TOPIC_ID, "UNKNOWN_TOPIC_ID"),
        ];
        for (code, name) in named {
            assert_eq!(code.name(), name, "{}", code.code());
        }
        assert!(code_is_retriable(6) && !code_is_retriable(87) && !code_is_retriable(0));
        assert!(check("x", 0).is_ok());
        assert!(check("x", 6).is_err());
    }
}

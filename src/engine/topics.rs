//! Topic names: Kafka's rule for them, and what `build()` does about
//! origin topics that do not exist yet.

use crate::error::{Error, Result};

/// What [`EngineBuilder::build`](crate::EngineBuilder::build) does when an
/// origin topic does not exist, set with
/// [`EngineBuilder::missing_topics`](crate::EngineBuilder::missing_topics).
///
/// ```
/// use kafka_retry::{Engine, MemoryBroker, MissingTopics, Outcome};
/// let builder = Engine::builder(MemoryBroker::new())
///     .group_id("billing")
///     .topics(["orders"])
///     .missing_topics(MissingTopics::Wait)
///     .handler(|_r| Outcome::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingTopics {
    /// `build()` fails with [`Error::UnknownTopic`] naming the topic. The
    /// default: a typo in a topic name is found at start-up.
    #[default]
    Fail,
    /// `build()` starts the engine anyway, with a warning; records are
    /// handled once the topic is created (on Kafka, once the group leader
    /// notices it, within the consumer's metadata max age). Like Spring
    /// Kafka's `missingTopicsFatal = false`.
    Wait,
}

/// Kafka's rule: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn is_legal_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

const RULE: &str = "1-249 characters of [a-zA-Z0-9._-], not `.` or `..`";

/// Checks a topic name given by the user in `field`.
pub(crate) fn check_topic(field: &'static str, name: &str) -> Result<()> {
    if is_legal_topic_name(name) {
        return Ok(());
    }
    Err(Error::config(
        field,
        format!("`{name}` is not a legal Kafka topic name ({RULE})"),
    ))
}

/// Checks a topic name derived from the group id (`<group>-retry`), naming
/// the group id and the setter that avoids the derivation.
pub(crate) fn check_derived_topic(
    group_id: &str,
    what: &str,
    setter: &str,
    name: &str,
) -> Result<()> {
    if is_legal_topic_name(name) {
        return Ok(());
    }
    Err(Error::config(
        "group_id",
        format!(
            "`{group_id}` makes the {what} `{name}`, which is not a legal Kafka topic name \
             ({RULE}); choose another group id or set {setter}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_topic_name_rule() {
        for ok in ["a", "orders", "my_group-retry", "a.b", &"x".repeat(249)] {
            assert!(is_legal_topic_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "my group-retry",
            "é",
            "a/b",
            &"x".repeat(250),
        ] {
            assert!(!is_legal_topic_name(bad), "{bad}");
        }
    }
}

//! Topic names: Kafka's rule for them, and what `build()` does about
//! origin topics that do not exist yet.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::headers::DeadReason;
use crate::record::Record;
use crate::transport::Transport;

/// A dead-letter router, set with
/// [`EngineBuilder::dead_letter_router`](crate::EngineBuilder::dead_letter_router):
/// the topic a given-up record goes to, `None` for the default dead-letter topic.
pub(crate) type Router = Arc<dyn Fn(&Record, DeadReason) -> Option<String> + Send + Sync>;

/// How long a failed creation of a routed topic is remembered before the
/// engine tries again (meanwhile its records go to the default topic).
const CREATE_RETRY: Duration = Duration::from_secs(5);

/// A routed topic that exists (`Ok`), or the last creation error and when.
type Known = std::result::Result<(), (String, Instant)>;

/// Where dead letters go: the default topic and the router's topics, each
/// created once, on first use.
pub(crate) struct DeadLetterTopics {
    pub default: Option<String>,
    router: Option<Router>,
    transport: Arc<dyn Transport>,
    partitions: i32,
    replication: Option<i16>,
    /// The origin topics and the retry topic: a router choosing one of them
    /// would feed given-up records back into handling (a loop), so such a
    /// choice goes to the default topic, as `build()` refuses for it.
    refused: Vec<String>,
    /// Routed topics known to exist (`Ok`), or the last creation error and when.
    known: Mutex<HashMap<String, Known>>,
}

impl DeadLetterTopics {
    pub(crate) fn new(
        default: Option<String>,
        router: Option<Router>,
        transport: Arc<dyn Transport>,
        partitions: i32,
        replication: Option<i16>,
        refused: Vec<String>,
    ) -> Self {
        DeadLetterTopics {
            default,
            router,
            transport,
            partitions,
            replication,
            refused,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The topic for a dead letter of `record` (`None`: dead-lettering is
    /// off and the router chose nothing) and, when the router's choice could
    /// not be used, why (the record then goes to the default topic).
    pub(crate) fn choose(
        &self,
        record: &Record,
        reason: DeadReason,
    ) -> (Option<String>, Option<String>) {
        let Some(router) = &self.router else {
            return (self.default.clone(), None);
        };
        // A panicking router is a bad choice like any other, never a dead worker.
        let chosen = match catch_unwind(AssertUnwindSafe(|| router(record, reason))) {
            Ok(Some(t)) => t,
            Ok(None) => return (self.default.clone(), None),
            Err(panic) => {
                let why = format!(
                    "dead-letter router panicked: {}",
                    super::panic::panic_message(&*panic)
                );
                return (self.default.clone(), Some(why));
            }
        };
        match self.ensure(&chosen) {
            Ok(()) => (Some(chosen), None),
            Err(e) => (
                self.default.clone(),
                Some(format!("dead-letter router chose {chosen:?}: {e}")),
            ),
        }
    }

    fn ensure(&self, topic: &str) -> std::result::Result<(), String> {
        if !is_legal_topic_name(topic) {
            return Err(format!("not a legal Kafka topic name ({RULE})"));
        }
        if self.default.as_deref() == Some(topic) {
            return Ok(());
        }
        if self.refused.iter().any(|t| t == topic) {
            return Err("is an origin or the retry topic of this engine, where a dead letter would be handled again".into());
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(topic) {
            Some(Ok(())) => return Ok(()),
            Some(Err((e, at))) if at.elapsed() < CREATE_RETRY => return Err(e.clone()),
            _ => {}
        }
        // Under the lock: a topic is looked up and created once, not once per worker.
        let result = match self.transport.partition_count(topic) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                log::info!(
                    "creating dead-letter topic {topic} with {} partitions",
                    self.partitions
                );
                self.transport
                    .create_topic(topic, self.partitions, self.replication)
                    .or_else(|e| match self.transport.partition_count(topic) {
                        // Created meanwhile by another instance.
                        Ok(Some(_)) => Ok(()),
                        _ => Err(e),
                    })
                    .map_err(|e| format!("cannot be created: {e}"))
            }
            Err(e) => Err(format!("cannot be looked up: {e}")),
        };
        known.insert(
            topic.to_string(),
            result.clone().map_err(|e| (e, Instant::now())),
        );
        result
    }
}

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

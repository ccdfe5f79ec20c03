//! DescribeConfigs for one topic's cleanup settings (`retention.ms`,
//! `retention.bytes`, `cleanup.policy`): the engine checks that its retry
//! topic keeps parked records long enough and never compacts them.

use std::time::Duration;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::client::Client;
use super::retry::{classify, Retry};
use crate::error::{Error, Result};
use crate::transport::Retention;

/// DescribeConfigs' resource type of a topic.
const TOPIC: i8 = 2;

impl Client {
    /// `topic`'s cleanup settings; `Ok(None)` when the broker reports none
    /// of them (Tansu 0.6 answers with an empty list).
    pub(crate) fn retention(&self, topic: &str) -> Result<Option<Retention>> {
        let timeout = self.config().request_timeout;
        // The topic's own error code is checked inside the retry, so a
        // retriable one (a timed-out request) is sent again.
        Retry::new(self.config()).run(
            "DescribeConfigs",
            &mut (),
            |_| {
                let reply = self.admin_call(|c| {
                    let v = c.version(ApiKey::DescribeConfigs)?;
                    let mut resource = DescribeConfigsResource::default();
                    resource.resource_type = TOPIC;
                    resource.resource_name = StrBytes::from_string(topic.to_string());
                    // Every setting (null keys), though three are read:
                    // Tansu 0.6 fails to answer a request that names keys
                    // (it closes the connection); Apache Kafka's answer is
                    // a few KB, once per engine build.
                    resource.configuration_keys = None;
                    let mut req = DescribeConfigsRequest::default();
                    req.resources = vec![resource];
                    c.call(v, &req, timeout)
                })?;
                let found = reply
                    .results
                    .into_iter()
                    .find(|r| r.resource_type == TOPIC && &*r.resource_name == topic)
                    .ok_or_else(|| {
                        Error::Protocol(format!(
                            "DescribeConfigs {topic}: topic missing from the reply"
                        ))
                    })?;
                parse(topic, found)
            },
            |_, e| classify(e),
        )
    }
}

/// The settings of one reply entry; values that do not parse are left out
/// (unknown), not guessed.
fn parse(topic: &str, found: DescribeConfigsResult) -> Result<Option<Retention>> {
    if found.error_code != 0 {
        let ctx = match &found.error_message {
            Some(m) if !m.is_empty() => format!("DescribeConfigs {topic} ({})", &**m),
            _ => format!("DescribeConfigs {topic}"),
        };
        return Err(Error::kafka(ctx, found.error_code));
    }
    let mut seen = false;
    let mut retention = Retention::default();
    for c in &found.configs {
        let Some(value) = c.value.as_deref() else {
            continue;
        };
        let value = value.trim();
        match &*c.name {
            // -1 (or any negative) is unlimited.
            "retention.ms" => {
                seen = true;
                retention.time = value
                    .parse::<i64>()
                    .ok()
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(Duration::from_millis);
            }
            "retention.bytes" => {
                seen = true;
                retention.bytes = value
                    .parse::<i64>()
                    .ok()
                    .and_then(|b| u64::try_from(b).ok());
            }
            // A list: "delete", "compact", "compact,delete" (Kafka also
            // accepts "[compact, delete]").
            "cleanup.policy" => {
                seen = true;
                retention.compacted = value
                    .split(|ch: char| ch == ',' || ch.is_whitespace() || ch == '[' || ch == ']')
                    .any(|p| p.eq_ignore_ascii_case("compact"));
            }
            _ => {}
        }
    }
    Ok(seen.then_some(retention))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
    use kafka_protocol::messages::DescribeConfigsResponse;
    use kafka_protocol::protocol::Encodable;

    use super::super::config::KafkaConfig;
    use super::super::fake::{FakeBroker, Seen};
    use super::*;

    const DESCRIBE_CONFIGS: i16 = 32;
    /// The fake's default versions plus DescribeConfigs v1 (non-flexible).
    const VERSIONS: &[(i16, i16)] = &[(18, 0), (3, 1), (DESCRIBE_CONFIGS, 1)];

    fn reply(code: i16, configs: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut r = DescribeConfigsResult::default();
        r.error_code = code;
        r.resource_type = TOPIC;
        r.resource_name = StrBytes::from_static_str("t");
        r.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = DescribeConfigsResourceResult::default();
                c.name = StrBytes::from_string(k.to_string());
                c.value = v.map(|v| StrBytes::from_string(v.to_string()));
                c
            })
            .collect();
        let mut resp = DescribeConfigsResponse::default();
        resp.results = vec![r];
        let mut out = bytes::BytesMut::new();
        resp.encode(&mut out, 1).unwrap();
        out.to_vec()
    }

    fn ask(
        answer: impl Fn(&Seen, usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> (FakeBroker, Result<Option<Retention>>) {
        let broker = FakeBroker::start_with_versions(VERSIONS, move |r, n| {
            (r.key == DESCRIBE_CONFIGS).then(|| answer(r, n)).flatten()
        });
        let config = KafkaConfig::new(broker.addr())
            .retry_backoff(Duration::from_millis(5))
            .max_retries(3);
        let client: Arc<Client> = Client::bootstrap(config).unwrap();
        let got = client.retention("t");
        (broker, got)
    }

    #[test]
    fn settings_are_read_and_parsed() {
        let (broker, got) = ask(|r, _| {
            // The request names the topic.
            assert!(r.body.windows(3).any(|w| w == b"\x00\x01t"), "{:?}", r.body);
            Some(reply(
                0,
                &[
                    ("retention.ms", Some("3600000")),
                    ("segment.ms", Some("1")),
                    ("retention.bytes", Some("-1")),
                    ("cleanup.policy", Some("compact,delete")),
                ],
            ))
        });
        assert_eq!(
            got.unwrap(),
            Some(Retention::new(Some(Duration::from_secs(3600)), None, true))
        );
        assert_eq!(broker.count(DESCRIBE_CONFIGS), 1);

        let (_, got) = ask(|_, _| {
            Some(reply(
                0,
                &[
                    ("retention.ms", Some("-1")),
                    ("retention.bytes", Some("1073741824")),
                    ("cleanup.policy", Some("delete")),
                ],
            ))
        });
        assert_eq!(
            got.unwrap(),
            Some(Retention::new(None, Some(1 << 30), false))
        );
    }

    #[test]
    fn an_empty_or_odd_answer_is_unknown_not_guessed() {
        // Tansu 0.6: no configs at all.
        let (_, got) = ask(|_, _| Some(reply(0, &[])));
        assert_eq!(got.unwrap(), None);
        // Values that do not parse are left unknown.
        let (_, got) = ask(|_, _| {
            Some(reply(
                0,
                &[("retention.ms", Some("soon")), ("cleanup.policy", None)],
            ))
        });
        assert_eq!(got.unwrap(), Some(Retention::default()));
    }

    #[test]
    fn an_error_code_is_an_error_and_a_retriable_one_is_retried() {
        // TOPIC_AUTHORIZATION_FAILED (29): at once.
        let (broker, got) = ask(|_, _| Some(reply(29, &[])));
        let err = got.unwrap_err();
        assert!(err.to_string().contains("DescribeConfigs t"), "{err}");
        assert_eq!(broker.count(DESCRIBE_CONFIGS), 1);
        // REQUEST_TIMED_OUT (7) once, then the answer.
        let (broker, got) = ask(|_, n| {
            Some(if n == 0 {
                reply(7, &[])
            } else {
                reply(0, &[("retention.ms", Some("1000"))])
            })
        });
        assert_eq!(
            got.unwrap(),
            Some(Retention::new(Some(Duration::from_secs(1)), None, false))
        );
        assert_eq!(broker.count(DESCRIBE_CONFIGS), 2);
    }

    #[test]
    fn a_broker_without_describe_configs_is_an_error() {
        let broker = FakeBroker::start(|_, _| None);
        let client = Client::bootstrap(KafkaConfig::new(broker.addr())).unwrap();
        let err = client.retention("t").unwrap_err();
        assert!(err.to_string().contains("DescribeConfigs"), "{err}");
    }
}

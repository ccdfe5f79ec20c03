//! Java `client.properties` / librdkafka settings into a
//! [`KafkaConfig`]: [`KafkaConfig::from_properties`] and
//! [`KafkaConfig::from_properties_file`].
//!
//! Every key is one of three kinds, and none is dropped silently:
//! - **applied** ([`APPLIED`]): the connection, security and producer /
//!   fetch settings this client has;
//! - **ignored with a warning** ([`IGNORED`]): keys of other clients or of
//!   the engine builder that are common in real files and harmless to skip
//!   (a `log::warn!` line each says where the setting belongs instead);
//! - **refused** ([`REFUSED`]): settings this client cannot honour and
//!   whose loss would change security or delivery (JKS keystores, Kerberos,
//!   encrypted keys, Java callback classes): an error says what to do.
//!
//! Anything else is an error naming the key, with a "did you mean" hint.
//!
//! Files: `keys.rs` (the three key tables), `syntax.rs` (Java's properties
//! file syntax), `sasl_keys.rs` (the SASL keys and `sasl.jaas.config`), this one
//! (applying keys to a [`KafkaConfig`], hints).

mod keys;
mod sasl_keys;
mod syntax;

use std::path::Path;
use std::time::Duration;

use super::config::{Acks, Compression, KafkaConfig};

use super::security::SecurityProtocol;
use crate::error::{Error, Result};
use crate::transport::IsolationLevel;

pub(crate) use keys::{APPLIED, IGNORED, REFUSED};
use sasl_keys::SaslParts;
use syntax::parse;

/// One `key=value` and where it came from (for messages).
struct Entry {
    key: String,
    value: String,
    /// `"line 3 of client.properties"`, for a file.
    origin: Option<String>,
}

impl KafkaConfig {
    /// Settings from Java / librdkafka property names, as in a
    /// `client.properties` file: `bootstrap.servers`, `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `sasl.jaas.config`, `ssl.ca.location`, ... (the README's "Security"
    /// section lists them all). Keys of other clients and of the engine
    /// builder are skipped with a warning (`group.id`, serializers, ...);
    /// settings that cannot be honoured (JKS keystores, Kerberos, encrypted
    /// keys) and unknown keys are errors naming the key, with a "did you
    /// mean" hint. A later duplicate wins. Values are trimmed.
    ///
    /// ```
    /// use kafka_retry::{KafkaConfig, SecurityProtocol};
    /// let config = KafkaConfig::from_properties([
    ///     ("bootstrap.servers", "broker:9093"),
    ///     ("security.protocol", "SSL"),
    ///     ("request.timeout.ms", "20000"),
    /// ])?;
    /// # let _ = config;
    ///
    /// let err = KafkaConfig::from_properties([("bootstrap.server", "b:9092")]).unwrap_err();
    /// assert!(err.to_string().contains("did you mean `bootstrap.servers`"));
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn from_properties<I, K, V>(properties: I) -> Result<KafkaConfig>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let entries = properties
            .into_iter()
            .map(|(k, v)| Entry {
                key: k.as_ref().trim().to_string(),
                value: v.as_ref().trim().to_string(),
                origin: None,
            })
            .collect();
        apply(entries)
    }

    /// [`KafkaConfig::from_properties`] from a Java properties file:
    /// `key=value` or `key: value` (or `key value`) lines, `#` and `!`
    /// comment lines, blank lines, a trailing `\` continuing a line, and
    /// the escapes `\t \n \r \f \\ \uXXXX`. Errors name the file and line.
    ///
    /// ```no_run
    /// let config = kafka_retry::KafkaConfig::from_properties_file("client.properties")?;
    /// let kafka = kafka_retry::KafkaTransport::connect(config)?;
    /// # Ok::<(), kafka_retry::Error>(())
    /// ```
    pub fn from_properties_file(path: impl AsRef<Path>) -> Result<KafkaConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config("properties", format!("cannot read {}: {e}", path.display()))
        })?;
        let entries = parse(&text)
            .into_iter()
            .map(|(line, key, value)| Entry {
                key,
                value,
                origin: Some(format!("line {line} of {}", path.display())),
            })
            .collect();
        apply(entries)
    }
}

fn apply(entries: Vec<Entry>) -> Result<KafkaConfig> {
    let mut config = KafkaConfig::default();
    let mut sasl = SaslParts::default();
    for e in entries {
        let at = |field: &'static str, reason: String| -> Error {
            match &e.origin {
                Some(o) => Error::config(field, format!("{reason} ({o})")),
                None => Error::config(field, reason),
            }
        };
        let key = e.key.as_str();
        let Some(field) = APPLIED.iter().copied().find(|k| *k == key) else {
            if let Some((_, why)) = family(IGNORED, key) {
                log::warn!("kafka: properties: ignoring `{key}`: {why}");
                continue;
            }
            if let Some((_, why)) = family(REFUSED, key) {
                return Err(at("properties", format!("`{key}` is not supported: {why}")));
            }
            return Err(at(
                "properties",
                format!("unknown key `{key}`{}", did_you_mean(key)),
            ));
        };
        let v = e.value.as_str();
        let ms = || -> Result<Duration> {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| at(field, format!("`{v}` is not a number of milliseconds")))
        };
        let number = || -> Result<u64> {
            v.parse::<u64>()
                .map_err(|_| at(field, format!("`{v}` is not a non-negative whole number")))
        };
        let int = || -> Result<i32> {
            v.parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| at(field, format!("`{v}` is not a positive 32-bit number")))
        };
        config = match field {
            "bootstrap.servers" | "metadata.broker.list" => config.bootstrap(v),
            "client.id" => config.client_id(v),
            "security.protocol" => config.security_protocol(
                v.parse::<SecurityProtocol>()
                    .map_err(|err| at(field, reason_of(err)))?,
            ),
            "sasl.mechanism" | "sasl.mechanisms" => {
                sasl.mechanism = Some(v.to_string());
                config
            }
            "sasl.username" => {
                sasl.username = Some(v.to_string());
                config
            }
            "sasl.password" => {
                sasl.password = Some(v.to_string());
                config
            }
            "sasl.jaas.config" => {
                sasl.jaas = Some((v.to_string(), e.origin.clone()));
                config
            }
            "sasl.oauthbearer.config" => {
                sasl.oauthbearer_config = Some(v.to_string());
                config
            }
            "enable.sasl.oauthbearer.unsecure.jwt" => {
                sasl.unsecure_jwt = match v.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(at(field, format!("`{v}` is not true or false"))),
                };
                config
            }
            "ssl.ca.location" if v.eq_ignore_ascii_case("probe") => config,
            "ssl.ca.location" => config.ssl_ca_location(v),
            "ssl.ca.pem" => config.ssl_ca_pem(v),
            "ssl.certificate.location" => config.ssl_certificate_location(v),
            "ssl.certificate.pem" => config.ssl_certificate_pem(v),
            "ssl.key.location" => config.ssl_key_location(v),
            "ssl.key.pem" => config.ssl_key_pem(v),
            "ssl.endpoint.identification.algorithm" => match v.to_ascii_lowercase().as_str() {
                "https" => config.ssl_hostname_verification(true),
                // Java takes an empty value as "off" too.
                "none" | "" => config.ssl_hostname_verification(false),
                _ => return Err(at(field, format!("`{v}` is not `https` or `none`"))),
            },
            "request.timeout.ms" => config.request_timeout(ms()?),
            "socket.connection.setup.timeout.ms" => config.connect_timeout(ms()?),
            "retry.backoff.ms" => config.retry_backoff(ms()?),
            "retries" | "message.send.max.retries" => {
                config.max_retries(number()?.min(u64::from(u32::MAX)) as u32)
            }
            "delivery.timeout.ms" | "message.timeout.ms" => config.delivery_timeout(ms()?),
            "acks" | "request.required.acks" => match v.to_ascii_lowercase().as_str() {
                "all" | "-1" => config.acks(Acks::All),
                "1" => config.acks(Acks::Leader),
                "0" => {
                    return Err(at(
                        field,
                        "acks=0 is not supported: the engine counts a record as done only \
                         once the broker acknowledged it (use all or 1)"
                            .to_string(),
                    ))
                }
                _ => return Err(at(field, format!("`{v}` is not all, -1 or 1"))),
            },
            "compression.type" | "compression.codec" => {
                config.compression(match v.to_ascii_lowercase().as_str() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "snappy" => Compression::Snappy,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    _ => {
                        return Err(at(
                            field,
                            format!("`{v}` is not none, gzip, snappy, lz4 or zstd"),
                        ))
                    }
                })
            }
            "linger.ms" | "queue.buffering.max.ms" => config.linger(ms()?),
            "batch.size" => config.batch_size(number()? as usize),
            "max.in.flight.requests.per.connection" | "max.in.flight" => {
                config.max_in_flight(number()? as usize)
            }
            "fetch.max.bytes" => config.fetch_max_bytes(int()?),
            "fetch.max.wait.ms" | "fetch.wait.max.ms" => config.fetch_max_wait(ms()?),
            "fetch.min.bytes" => config.fetch_min_bytes(int()?),
            "max.partition.fetch.bytes" => config.partition_fetch_max_bytes(int()?),
            "heartbeat.interval.ms" => config.heartbeat_interval(Some(ms()?)),
            "metadata.max.age.ms" => config.metadata_max_age(ms()?),
            // A consumer key, but applied (not skipped like auto.offset.reset):
            // ignoring read_committed would hand aborted records to handlers.
            "isolation.level" => config.isolation_level(match v.to_ascii_lowercase().as_str() {
                "read_committed" => IsolationLevel::ReadCommitted,
                "read_uncommitted" => IsolationLevel::ReadUncommitted,
                _ => {
                    return Err(at(
                        field,
                        format!("`{v}` is not read_committed or read_uncommitted"),
                    ))
                }
            }),
            "enable.idempotence" => config.idempotence(match v.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(at(field, format!("`{v}` is not true or false"))),
            }),
            _ => unreachable_key(field)?,
        };
    }
    match sasl.resolve()? {
        Some(s) => Ok(config.sasl(s)),
        None => Ok(config),
    }
}

/// A key in [`APPLIED`] without a branch in `apply` (a bug): an error, not
/// a panic.
fn unreachable_key(field: &'static str) -> Result<KafkaConfig> {
    Err(Error::config(
        field,
        "known key without a handler (a bug in kafka-retry)",
    ))
}

pub(super) fn reason_of(e: Error) -> String {
    match e {
        Error::Config { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The entry of `table` for `key`, exact or by a family prefix ending in `.`.
fn family<'a>(table: &'a [(&'a str, &'a str)], key: &str) -> Option<&'a (&'a str, &'a str)> {
    table
        .iter()
        .find(|(k, _)| *k == key || (k.ends_with('.') && key.starts_with(k)))
}

/// `: did you mean `x`?` for the nearest known key, if one is near.
fn did_you_mean(key: &str) -> String {
    let known = APPLIED
        .iter()
        .copied()
        .chain(IGNORED.iter().map(|(k, _)| *k))
        .chain(REFUSED.iter().map(|(k, _)| *k));
    let best = known
        .map(|k| (edit_distance(key, k), k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 3.max(key.len() / 6) => format!(": did you mean `{k}`?"),
        _ => ": see the README's \"Security\" section for the keys kafka-retry reads".to_string(),
    }
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cost = usize::from(ca != b[j]);
            let next = (prev + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::super::sasl::SaslMechanism;
    use super::sasl_keys::{self, JaasModule};
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Result<KafkaConfig> {
        KafkaConfig::from_properties(pairs.iter().copied())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match props(pairs) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_applied_key_sets_its_field() {
        let c = props(&[
            ("bootstrap.servers", "a:1, b:2"),
            ("client.id", "billing"),
            ("security.protocol", "ssl"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.certificate.location", "/c.pem"),
            ("ssl.key.location", "/c.key"),
            ("ssl.endpoint.identification.algorithm", "none"),
            ("request.timeout.ms", "1001"),
            ("socket.connection.setup.timeout.ms", "1002"),
            ("retry.backoff.ms", "1003"),
            ("retries", "2147483647"),
            ("delivery.timeout.ms", "1004"),
            ("acks", "1"),
            ("compression.type", "zstd"),
            ("linger.ms", "7"),
            ("batch.size", "16384"),
            ("max.in.flight.requests.per.connection", "1"),
            ("fetch.max.bytes", "1000000"),
            ("fetch.max.wait.ms", "250"),
            ("fetch.min.bytes", "10"),
            ("max.partition.fetch.bytes", "500000"),
            ("heartbeat.interval.ms", "3000"),
            ("metadata.max.age.ms", "60000"),
            ("enable.idempotence", "false"),
        ])
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(c.bootstrap, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(c.client_id, "billing");
        assert_eq!(c.security_protocol, SecurityProtocol::Ssl);
        assert_eq!(
            c.tls.ca,
            Some(super::super::tls::Pem::File("/ca.pem".into()))
        );
        assert!(c.tls.cert.is_some() && c.tls.key.is_some() && c.tls.no_hostname_check);
        assert_eq!(
            (
                c.request_timeout,
                c.connect_timeout,
                c.retry_backoff,
                c.delivery_timeout
            ),
            (ms(1001), ms(1002), ms(1003), ms(1004))
        );
        assert_eq!(c.max_retries, i32::MAX as u32);
        assert_eq!((c.acks, c.compression), (Acks::Leader, Compression::Zstd));
        assert!(!c.idempotence);
        let on = KafkaConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("enable.idempotence", "TRUE"),
        ])
        .unwrap();
        assert!(on.idempotence);
        assert_eq!((c.linger, c.batch_size, c.max_in_flight), (ms(7), 16384, 1));
        assert_eq!(
            (c.fetch_max_bytes, c.fetch_max_wait, c.fetch_min_bytes),
            (1_000_000, ms(250), 10)
        );
        assert_eq!(c.partition_fetch_max_bytes, 500_000);
        assert_eq!(c.heartbeat_interval, Some(ms(3000)));
        assert_eq!(c.metadata_max_age, ms(60000));

        // librdkafka's aliases and spellings.
        let c = props(&[
            ("metadata.broker.list", "x:9"),
            ("request.required.acks", "-1"),
            ("compression.codec", "lz4"),
            ("queue.buffering.max.ms", "9"),
            ("message.timeout.ms", "5000"),
            ("message.send.max.retries", "3"),
            ("fetch.wait.max.ms", "100"),
            ("ssl.ca.pem", "-----BEGIN CERTIFICATE-----"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ])
        .unwrap();
        assert_eq!(c.bootstrap, vec!["x:9".to_string()]);
        assert_eq!((c.acks, c.compression), (Acks::All, Compression::Lz4));
        assert_eq!((c.linger, c.delivery_timeout), (ms(9), ms(5000)));
        assert_eq!((c.max_retries, c.fetch_max_wait), (3, ms(100)));
        assert!(matches!(c.tls.ca, Some(super::super::tls::Pem::Text(_))));
        assert!(!c.tls.no_hostname_check);
        // `probe` is librdkafka's "system store", our default.
        assert!(props(&[("ssl.ca.location", "probe")])
            .unwrap()
            .tls
            .ca
            .is_none());
    }

    #[test]
    fn every_applied_key_has_a_handler() {
        for key in APPLIED {
            if let Err(e) = props(&[(key, "1")]) {
                assert!(!e.to_string().contains("without a handler"), "{e}");
            }
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (pairs, want) in [
            (vec![("security.protocol", "TLS")], "security.protocol"),
            (
                vec![("request.timeout.ms", "10s")],
                "`request.timeout.ms`: `10s` is not",
            ),
            (vec![("acks", "0")], "acks=0 is not supported"),
            (vec![("acks", "some")], "`acks`: `some`"),
            (vec![("compression.type", "brotli")], "compression.type"),
            (vec![("fetch.max.bytes", "-1")], "fetch.max.bytes"),
            (
                vec![("ssl.endpoint.identification.algorithm", "http")],
                "https` or `none",
            ),
            (vec![("enable.idempotence", "yes")], "enable.idempotence"),
        ] {
            let e = err(&pairs);
            assert!(e.contains(want), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn unknown_keys_get_a_hint() {
        let e = err(&[("ssl.ca.locaton", "/ca.pem")]);
        assert!(
            e.contains("unknown key `ssl.ca.locaton`: did you mean `ssl.ca.location`?"),
            "{e}"
        );
        let e = err(&[("sasl.mechansim", "PLAIN")]);
        assert!(e.contains("did you mean `sasl.mechanism`"), "{e}");
        let e = err(&[("bootstrap.server", "a:1")]);
        assert!(e.contains("did you mean `bootstrap.servers`"), "{e}");
        let e = err(&[("completely.different.thing", "1")]);
        assert!(
            e.contains("unknown key") && !e.contains("did you mean"),
            "{e}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn other_clients_keys_are_ignored_or_refused_by_list() {
        let c = props(&[
            ("group.id", "g"),
            ("session.timeout.ms", "45000"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            (
                "key.serializer",
                "org.apache.kafka.common.serialization.StringSerializer",
            ),
            ("client.dns.lookup", "use_all_dns_ips"),
            (
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
            ),
            ("schema.registry.url", "https://sr"),
            ("basic.auth.user.info", "k:s"),
            ("bootstrap.servers", "a:1"),
        ])
        .unwrap();
        assert_eq!(c.bootstrap, vec!["a:1".to_string()]);
        for (key, want) in [
            ("ssl.keystore.location", "convert to PEM"),
            ("ssl.truststore.location", "ssl.ca.location"),
            ("ssl.key.password", "decrypt the key"),
            ("sasl.kerberos.service.name", "GSSAPI"),
            ("sasl.login.callback.handler.class", "TokenProvider"),
        ] {
            let e = err(&[(key, "x")]);
            assert!(
                e.contains(&format!("`{key}` is not supported")) && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn sasl_from_username_password_and_jaas() {
        let c = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "s3cret"),
        ])
        .unwrap();
        let sasl = c.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism(), SaslMechanism::ScramSha512);
        assert!(!format!("{c:?}").contains("s3cret"));

        // Confluent Cloud's file: single quotes, PLAIN implied by the module.
        let jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required \
                    username='KEY' password='SEC\"RET';";
        let c = props(&[
            ("sasl.jaas.config", jaas),
            ("security.protocol", "SASL_SSL"),
        ])
        .unwrap();
        assert_eq!(c.sasl.as_ref().unwrap().mechanism(), SaslMechanism::Plain);
        let j = sasl_keys::jaas(jaas).unwrap();
        assert_eq!(j.username.as_deref(), Some("KEY"));
        assert_eq!(j.password.as_deref(), Some("SEC\"RET"));
        let j = sasl_keys::jaas(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p\"q";"#,
        )
        .unwrap();
        assert_eq!(
            (j.module, j.password.as_deref()),
            (JaasModule::Scram, Some("p\"q"))
        );

        let e = err(&[(
            "sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"p\";",
        )]);
        assert!(e.contains("SCRAM-SHA-256 or SCRAM-SHA-512"), "{e}");
        let e = err(&[
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "a"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"b\" password=\"p\";",
            ),
        ]);
        assert!(e.contains("differs") && !e.contains("\"p\""), "{e}");
        let e = err(&[("sasl.mechanism", "PLAIN"), ("sasl.username", "a")]);
        assert!(e.contains("sasl.password"), "{e}");
        let e = err(&[("sasl.username", "a"), ("sasl.password", "b")]);
        assert!(e.contains("no sasl.mechanism"), "{e}");
        let e = err(&[("sasl.mechanism", "GSSAPI")]);
        assert!(e.contains("GSSAPI"), "{e}");
        let e = err(&[(
            "sasl.jaas.config",
            "software.amazon.msk.auth.iam.IAMLoginModule required;",
        )]);
        assert!(e.contains("OAUTHBEARER with a TokenProvider"), "{e}");
        let e = err(&[(
            "sasl.jaas.config",
            "PlainLoginModule username=\"a\" password=\"secretpw\"",
        )]);
        assert!(e.contains("control flag") && !e.contains("secretpw"), "{e}");

        // OAUTHBEARER: the provider comes from code.
        let c = props(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            ("security.protocol", "SASL_SSL"),
        ])
        .unwrap();
        assert!(c.sasl.is_none());
        let e = err(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.config", "principal=a"),
        ]);
        assert!(
            e.contains("enable.sasl.oauthbearer.unsecure.jwt=true"),
            "{e}"
        );
        // librdkafka's unsecured tokens, opted in.
        let c = props(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", "principal=alice lifeSeconds=60"),
        ])
        .unwrap();
        assert_eq!(c.sasl.unwrap().mechanism(), SaslMechanism::OAuthBearer);
        let e = err(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", "principal=alice bogus=1"),
        ]);
        assert!(e.contains("bogus"), "{e}");
        // Java's unsecured login module.
        let c = props(&[(
            "sasl.jaas.config",
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
             unsecuredLoginStringClaim_sub=\"alice\" unsecuredLoginExtension_traceId=\"7\";",
        )])
        .unwrap();
        assert_eq!(c.sasl.unwrap().mechanism(), SaslMechanism::OAuthBearer);
        let e = err(&[(
            "sasl.jaas.config",
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
             clientId=\"x\";",
        )]);
        assert!(e.contains("clientId") && e.contains("TokenProvider"), "{e}");
    }

    #[test]
    fn java_properties_syntax() {
        let text = "# comment\n\
                    ! also a comment\n\
                    \n\
                    bootstrap.servers = a:1,\\\n    b:2\n\
                    client.id: my\\u0020app \n\
                    \tlinger.ms 12\n\
                    request.timeout.ms=5000\n\
                    request.timeout.ms=6000\n\
                    key\\=with\\:seps=v\n";
        let parsed = parse(text);
        let keys: Vec<&str> = parsed.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "bootstrap.servers",
                "client.id",
                "linger.ms",
                "request.timeout.ms",
                "request.timeout.ms",
                "key=with:seps"
            ]
        );
        assert_eq!(
            parsed[0],
            (4, "bootstrap.servers".to_string(), "a:1,b:2".to_string())
        );
        assert_eq!(parsed[1].2, "my app");
        assert_eq!(parsed[2].2, "12");

        let dir = std::env::temp_dir().join(format!("kafka-retry-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client.properties");
        std::fs::write(&file, &text[..text.find("key\\=").unwrap()]).unwrap();
        let c = KafkaConfig::from_properties_file(&file).unwrap();
        assert_eq!(c.bootstrap, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(
            (c.client_id.as_str(), c.request_timeout),
            ("my app", Duration::from_secs(6))
        );

        std::fs::write(&file, "bootstrap.servers=a:1\n\nsasl.mechansim=PLAIN\n").unwrap();
        let e = KafkaConfig::from_properties_file(&file)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3 of") && e.contains("client.properties"),
            "{e}"
        );
        let e = KafkaConfig::from_properties_file(dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn isolation_level_is_applied_not_skipped() {
        let c = props(&[("isolation.level", "READ_COMMITTED")]).unwrap();
        assert_eq!(c.isolation_level, IsolationLevel::ReadCommitted);
        let c = props(&[("isolation.level", "read_uncommitted")]).unwrap();
        assert_eq!(c.isolation_level, IsolationLevel::ReadUncommitted);
        let err = props(&[("isolation.level", "serializable")]).unwrap_err();
        assert!(err.to_string().contains("read_committed"), "{err}");
    }
}

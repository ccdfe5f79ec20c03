//! The keys `from_properties` knows: applied, ignored with a warning, refused.

/// Keys [`KafkaConfig::from_properties`] applies (aliases of librdkafka
/// included).
pub(crate) const APPLIED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "sasl.oauthbearer.config",
    "enable.sasl.oauthbearer.unsecure.jwt",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.endpoint.identification.algorithm",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "retry.backoff.ms",
    "retries",
    "message.send.max.retries",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "acks",
    "request.required.acks",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "queue.buffering.max.ms",
    "batch.size",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "fetch.max.bytes",
    "fetch.max.wait.ms",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "max.partition.fetch.bytes",
    "heartbeat.interval.ms",
    "metadata.max.age.ms",
    "enable.idempotence",
    "isolation.level",
];

/// Keys that are accepted and skipped, each with a warning saying where
/// the setting belongs (a prefix ending in `.` covers a family).
pub(crate) const IGNORED: &[(&str, &str)] = &[
    (
        "group.id",
        "the group id is the engine's: EngineBuilder::group_id",
    ),
    (
        "session.timeout.ms",
        "the engine's setting: EngineBuilder::session_timeout",
    ),
    (
        "auto.offset.reset",
        "the engine's setting: EngineBuilder::offset_reset",
    ),
    (
        "enable.auto.commit",
        "the engine commits offsets itself, only for finished records",
    ),
    (
        "auto.commit.interval.ms",
        "the engine's setting: EngineBuilder::commit_interval",
    ),
    (
        "max.poll.records",
        "the engine's setting: EngineBuilder::max_poll_records",
    ),
    (
        "max.poll.interval.ms",
        "the engine heartbeats while handlers run; see EngineBuilder::rebalance_timeout",
    ),
    (
        // Java's list of assignor classes has no meaning here: the engine
        // offers cooperative-sticky then range, or range alone.
        "partition.assignment.strategy",
        "the engine's setting: EngineBuilder::rebalance_protocol (cooperative-sticky by default, \
         range with RebalanceProtocol::Eager)",
    ),
    (
        "key.serializer",
        "keys and values are bytes here; serialize in your code",
    ),
    (
        "value.serializer",
        "keys and values are bytes here; serialize in your code",
    ),
    (
        "key.deserializer",
        "keys and values are bytes here; deserialize in your handler",
    ),
    (
        "value.deserializer",
        "keys and values are bytes here; deserialize in your handler",
    ),
    (
        "client.dns.lookup",
        "every address a name resolves to is tried already",
    ),
    (
        "schema.registry.",
        "Schema Registry settings are not used by a Kafka client",
    ),
    (
        "basic.auth.",
        "Schema Registry settings are not used by a Kafka client",
    ),
];

/// Keys that are errors, with what to do instead (a prefix ending in `.`
/// covers a family).
pub(crate) const REFUSED: &[(&str, &str)] = &[
    (
        "ssl.keystore.",
        "JKS/PKCS#12 keystores are not read: convert to PEM (e.g. `keytool -importkeystore \
         -srckeystore ks.jks -destkeystore ks.p12 -deststoretype PKCS12`, then `openssl \
         pkcs12 -in ks.p12 -nokeys -out client.pem` and `openssl pkcs12 -in ks.p12 -nocerts \
         -nodes -out client.key`) and set ssl.certificate.location and ssl.key.location",
    ),
    (
        "ssl.truststore.",
        "JKS/PKCS#12 trust stores are not read: export the CA as PEM (e.g. `keytool \
         -exportcert -rfc -keystore truststore.jks -alias ca -file ca.pem`) and set \
         ssl.ca.location",
    ),
    (
        "ssl.key.password",
        "encrypted private keys are not supported: decrypt the key (e.g. `openssl pkcs8 \
         -in key.pem -out key-plain.pem`), keep it private, and leave ssl.key.password out",
    ),
    (
        "ssl.cipher.suites",
        "cipher suites are rustls's safe defaults and cannot be chosen here; for full \
         control pass your own rustls config with KafkaConfig::tls_config",
    ),
    (
        "ssl.enabled.protocols",
        "rustls speaks TLS 1.2 and 1.3 only; for full control pass your own rustls \
         config with KafkaConfig::tls_config",
    ),
    (
        "ssl.protocol",
        "rustls speaks TLS 1.2 and 1.3 only; for full control pass your own rustls \
         config with KafkaConfig::tls_config",
    ),
    (
        "sasl.kerberos.",
        "GSSAPI (Kerberos) is not supported: use PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER",
    ),
    (
        "sasl.login.callback.handler.class",
        "Java callback classes cannot run here: for OAUTHBEARER give a TokenProvider \
         with KafkaConfig::sasl(Sasl::oauthbearer(..))",
    ),
    (
        "sasl.client.callback.handler.class",
        "Java callback classes cannot run here: for OAUTHBEARER give a TokenProvider \
         with KafkaConfig::sasl(Sasl::oauthbearer(..)) (for MSK IAM, a signer of MSK \
         IAM tokens)",
    ),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "this client makes no HTTP calls: fetch tokens from your identity provider in a \
         TokenProvider and pass it with KafkaConfig::sasl(Sasl::oauthbearer(..))",
    ),
    (
        "sasl.oauthbearer.method",
        "OIDC token retrieval is not built in: fetch tokens in a TokenProvider and pass it \
         with KafkaConfig::sasl(Sasl::oauthbearer(..))",
    ),
];

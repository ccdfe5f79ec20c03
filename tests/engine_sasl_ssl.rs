//! The engine scenarios of tests/engine_memory.rs (retry, expiry and
//! reject, panics, malformed headers, key order, two engines, restart: no
//! record lost), run unchanged over SASL_SSL with SCRAM-SHA-512 through the
//! secure front end (`tests/common/secure.rs`: Python's `ssl` for TLS,
//! `scramp` for SCRAM, in front of a Tansu of its own). One front end for
//! the whole file; it exits with the test process.

mod common;
mod scenarios;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kafka_retry::{KafkaConfig, KafkaTransport, Sasl, SecurityProtocol};
use scenarios::Env;

use common::secure::{FrontOptions, SecureFront, PASSWORD, USER};

fn front() -> &'static SecureFront {
    static FRONT: OnceLock<SecureFront> = OnceLock::new();
    FRONT.get_or_init(|| {
        SecureFront::start(FrontOptions {
            tls: true,
            sasl: true,
            ..FrontOptions::default()
        })
    })
}

fn env() -> Env {
    common::init_log();
    let front = front();
    let config = KafkaConfig::new(&front.bootstrap)
        .security_protocol(SecurityProtocol::SaslSsl)
        .ssl_ca_location(&front.certs.ca)
        .sasl(Sasl::scram_sha512(USER, PASSWORD))
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    Env {
        transport: Arc::new(
            KafkaTransport::connect(config)
                .unwrap_or_else(|e| panic!("{e}\nfront end log:\n{}", front.log_text())),
        ),
        session_timeout: Duration::from_secs(2),
        slack: Duration::from_millis(500),
        name: "kafka over SASL_SSL (SCRAM-SHA-512)",
    }
}

#[test]
fn smoke() {
    let env = env();
    let t = env.topic("smoke-sasl-ssl", 1);
    env.produce(kafka_retry::OutRecord::new(&t).value("x"));
    assert_eq!(env.read(&t, 1, Duration::from_secs(20)).len(), 1);
    assert!(front().authentications() > 0, "SASL really ran");
}

// Every scenario of tests/scenarios, as one #[test] each.
scenario_tests!(env());

//! The engine scenarios of tests/engine_memory.rs, run unchanged on the
//! Kafka transport against the broker in `KAFKA_BOOTSTRAP` (Tansu, started by
//! `scripts/test`). Independent groups run in parallel: Tansu completes a
//! join only after about half the session timeout.

mod common;
mod scenarios;

use std::sync::Arc;
use std::time::Duration;

use kafka_retry::{KafkaConfig, KafkaTransport};
use scenarios::Env;

fn env() -> Env {
    let config = KafkaConfig::new(common::kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    Env {
        transport: Arc::new(KafkaTransport::connect(config).expect("connect to the test broker")),
        session_timeout: Duration::from_secs(2),
        slack: Duration::from_millis(500),
        name: "kafka",
    }
}

#[test]
fn smoke() {
    let env = env();
    let t = env.topic("smoke", 1);
    env.produce(kafka_retry::OutRecord::new(&t).value("x"));
    assert_eq!(env.read(&t, 1, Duration::from_secs(20)).len(), 1);
}

// Every scenario of tests/scenarios, as one #[test] each.
scenario_tests!(env());

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

#[test]
fn retry_redelivers_after_interval() {
    scenarios::retry_redelivers_after_interval(&env());
}

#[test]
fn expiry_and_reject_dead_letter() {
    scenarios::expiry_and_reject_dead_letter(&env());
}

#[test]
fn panic_is_caught_and_retried() {
    scenarios::panic_is_caught_and_retried(&env());
}

#[test]
fn malformed_retry_headers_are_dead_lettered() {
    scenarios::malformed_retry_headers_are_dead_lettered(&env());
}

#[test]
fn per_key_order_holds() {
    scenarios::per_key_order_holds(&env());
}

#[test]
fn two_engines_split_and_take_over() {
    scenarios::two_engines_split_and_take_over(&env());
}

#[test]
fn restart_resumes_after_commit() {
    scenarios::restart_resumes_after_commit(&env());
}

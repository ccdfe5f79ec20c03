//! The source article's case on the embedded memory broker, no Kafka needed:
//! an `Update` arrives before the `Create` it depends on, is parked on the
//! retry topic, relayed back after the retry interval and then handled; an
//! `Update` whose `Create` never comes is dead-lettered as expired.
//!
//! Run: `cargo run --example quickstart` (`RUST_LOG=info` for engine logs).
//! The same scenario on Kafka: `cargo run --example kafka -- --bootstrap host:port`.

#[path = "shared/article.rs"]
mod article;

use std::sync::Arc;
use std::time::Duration;

use kafka_retry::MemoryBroker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let broker = MemoryBroker::new();
    article::run(
        Arc::new(broker),
        "orders",
        "quickstart",
        Duration::from_secs(10),
        kafka_retry::Redelivery::Origin,
    )
}

//! The quickstart scenario against a real Kafka broker (or Tansu).
//!
//! Run: `cargo run --example kafka -- --bootstrap 127.0.0.1:9092`
//! (or set `KAFKA_BOOTSTRAP`). Creates the topics it needs; each run uses
//! fresh topic and group names, so it can be repeated on the same cluster.
//! `scripts/test-broker cargo run --example kafka` starts a throw-away Tansu.

#[path = "shared/article.rs"]
mod article;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_retry::{KafkaConfig, KafkaTransport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let mut bootstrap = std::env::var("KAFKA_BOOTSTRAP").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bootstrap" => bootstrap = args.next(),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: kafka --bootstrap host:port"
                )
                .into())
            }
        }
    }
    let bootstrap =
        bootstrap.ok_or("no broker: pass --bootstrap host:port or set KAFKA_BOOTSTRAP")?;
    let transport = KafkaTransport::connect(KafkaConfig::new(&bootstrap))?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    println!("connected to {bootstrap}");
    // Short session timeout: Tansu completes a join after about half of it.
    article::run(
        Arc::new(transport),
        &format!("orders-{run}"),
        &format!("quickstart-{run}"),
        Duration::from_secs(2),
    )
}

//! The quickstart scenario against a real Kafka broker (or Tansu).
//!
//! Run: `cargo run --example kafka -- --bootstrap 127.0.0.1:9092`
//! (or set `KAFKA_BOOTSTRAP`). Creates the topics it needs; each run uses
//! fresh topic and group names, so it can be repeated on the same cluster.
//! `scripts/test-broker cargo run --example kafka` starts a throw-away Tansu.
//!
//! A secured cluster: `cargo run --example kafka -- --config client.properties`
//! with the Java / librdkafka settings you already use (`security.protocol`,
//! `ssl.ca.location`, `sasl.mechanism`, ...; see the README's "Security"
//! section). `--bootstrap` still works and overrides `bootstrap.servers`.
//!
//! `--redelivery private` sends due records straight from the relay to the
//! handler pool instead of back to the origin topic (`origin`, the default);
//! see the README's "Choosing a redelivery mode". `--key-order kept` keeps
//! each key's order across retries (with `--redelivery private`, which it
//! requires): the Update that arrives before its Create holds the Create
//! behind it until the Update is dead-lettered.

#[path = "shared/article.rs"]
mod article;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_retry::{KafkaConfig, KafkaTransport, KeyOrder, Redelivery};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let usage = "usage: kafka [--config client.properties] [--bootstrap host:port] \
                 [--redelivery origin|private] [--key-order kept|any]";
    let mut args = std::env::args().skip(1);
    let mut bootstrap = None;
    let mut config_file = None;
    let mut redelivery = Redelivery::Origin;
    let mut key_order = KeyOrder::Any;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bootstrap" => bootstrap = Some(args.next().ok_or(usage)?),
            "--config" => config_file = Some(args.next().ok_or(usage)?),
            "--redelivery" => {
                redelivery = match args.next().as_deref() {
                    Some("origin") => Redelivery::Origin,
                    Some("private") => Redelivery::Private,
                    _ => return Err(usage.into()),
                }
            }
            "--key-order" => {
                key_order = match args.next().as_deref() {
                    Some("kept") => KeyOrder::Kept,
                    Some("any") => KeyOrder::Any,
                    _ => return Err(usage.into()),
                }
            }
            "--help" | "-h" => {
                println!("{usage}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; {usage}").into()),
        }
    }
    let mut config = match &config_file {
        Some(path) => KafkaConfig::from_properties_file(path)?,
        None => KafkaConfig::default(),
    };
    // --bootstrap, else the file's bootstrap.servers, else KAFKA_BOOTSTRAP.
    if let Some(b) = bootstrap {
        config = config.bootstrap(b);
    } else if config.bootstrap_servers().is_empty() {
        let b = std::env::var("KAFKA_BOOTSTRAP").map_err(|_| {
            format!(
                "no broker: pass --bootstrap host:port, a --config file with \
                 bootstrap.servers, or set KAFKA_BOOTSTRAP; {usage}"
            )
        })?;
        config = config.bootstrap(b);
    }
    let bootstrap = config.bootstrap_servers().join(",");
    let transport = KafkaTransport::connect(config)?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    println!("connected to {bootstrap}");
    // Short session timeout: Tansu completes a join after about half of it.
    article::run_with(
        Arc::new(transport),
        &format!("orders-{run}"),
        &format!("quickstart-{run}"),
        Duration::from_secs(2),
        redelivery,
        key_order,
    )
}

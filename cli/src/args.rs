//! The command line's arguments (clap derive) and how they become a
//! transport and topic names.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kafka_retry::transport::Transport;
use kafka_retry::{KafkaConfig, KafkaTransport};

use crate::error::{Failure, Result};

/// Inspect, export and replay kafka-retry dead letters; show parked retries.
#[derive(Debug, Parser)]
#[command(name = "kafka-retry", version)]
pub struct Cli {
    /// How to reach the broker and which topics to use.
    #[command(flatten)]
    pub conn: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection settings, shared by every command.
#[derive(Debug, Args, Clone, Default)]
pub struct Connection {
    /// Bootstrap brokers, host:port[,host:port...] (overrides
    /// bootstrap.servers from --config).
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// A librdkafka/Java-style client.properties (TLS, SASL, ...).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The engine's consumer group: names `<group>-retry`, `<group>-dlt`
    /// and the relay's group `<group>-relay`.
    #[arg(long, global = true)]
    pub group: Option<String>,
    /// The retry topic (default `<group>-retry`).
    #[arg(long, global = true)]
    pub retry_topic: Option<String>,
    /// The dead-letter topic (default `<group>-dlt`).
    #[arg(long, global = true)]
    pub dlt: Option<String>,
    /// The relay's consumer group (default `<group>-relay`).
    #[arg(long, global = true)]
    pub relay_group: Option<String>,
}

/// The commands.
// Parsed once per process: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dead-letter topic: summary, export, replay.
    Dlt {
        /// What to do with it.
        #[command(subcommand)]
        command: DltCommand,
    },
    /// Retry topic: what is parked and when it falls due.
    Retry {
        /// What to show.
        #[command(subcommand)]
        command: RetryCommand,
    },
}

/// `kafka-retry dlt ...`.
#[derive(Debug, Subcommand)]
pub enum DltCommand {
    /// Counts by dead reason and origin topic, top reasons, age histogram.
    Summary(SummaryArgs),
    /// One JSON object per dead letter.
    Export(ExportArgs),
    /// Sends dead letters back to their origin topic (or --to) once each.
    Replay(ReplayArgs),
}

/// `kafka-retry retry ...`.
#[derive(Debug, Subcommand)]
pub enum RetryCommand {
    /// Parked records per partition, due-time histogram, the relay's lag.
    Status(StatusArgs),
}

/// `dlt summary`.
#[derive(Debug, Args, Clone, Default)]
pub struct SummaryArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Which dead letters to count.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Export formats.
#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Jsonl,
}

/// `dlt export`.
#[derive(Debug, Args, Clone, Default)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Which dead letters to export.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Which dead letters a command acts on. Every filter given must match.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// retry.dead-reason: expired, attempts, rejected, malformed (repeatable).
    #[arg(long)]
    pub reason: Vec<String>,
    /// retry.origin-topic (repeatable).
    #[arg(long)]
    pub origin_topic: Vec<String>,
    /// The record key, exactly (UTF-8).
    #[arg(long, conflicts_with = "key_regex")]
    pub key: Option<String>,
    /// A regex the whole key must match (UTF-8 keys only).
    #[arg(long)]
    pub key_regex: Option<String>,
    /// Dead-lettered at or after: RFC 3339, a date, epoch ms, or `2h` (ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before: same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many dead letters (after filters and de-duplication).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `dlt replay`.
#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// Which dead letters to replay.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Print what would be replayed and the counts; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most N records per second, e.g. `100` or `100/s`.
    #[arg(long)]
    pub rate: Option<String>,
    /// Replay to this topic instead of each record's origin topic.
    #[arg(long)]
    pub to: Option<String>,
    /// A dead letter already replayed this many times goes to the parking
    /// topic instead.
    #[arg(long, default_value_t = DEFAULT_MAX_REPLAYS)]
    pub max_replays: u32,
    /// Where over-replayed records go (default `<dlt>-parked`).
    #[arg(long)]
    pub parking_topic: Option<String>,
    /// The ledger of replayed dead letters (default `<dlt>-replayed`).
    #[arg(long)]
    pub ledger_topic: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long after an interrupted run's last ledger entry its writes
    /// may still land (its producer's delivery timeout plus a request
    /// timeout: 120 s + 30 s by default); a rerun within it waits before
    /// checking what that run wrote.
    #[arg(long, default_value = DEFAULT_SETTLE)]
    pub settle: String,
}

/// `--settle` when not given.
pub const DEFAULT_SETTLE: &str = "150s";

/// The command line's defaults (`--max-replays 3`).
impl Default for ReplayArgs {
    fn default() -> Self {
        ReplayArgs {
            filter: FilterArgs::default(),
            dry_run: false,
            rate: None,
            to: None,
            max_replays: DEFAULT_MAX_REPLAYS,
            parking_topic: None,
            ledger_topic: None,
            json: false,
            settle: DEFAULT_SETTLE.to_string(),
        }
    }
}

/// `--max-replays` when not given.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// `retry status`.
#[derive(Debug, Args, Clone, Default)]
pub struct StatusArgs {
    /// The engine's retry interval, for records without retry.due-at
    /// (due = retry.enqueued-at + interval; with backoff, the earliest).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Connection {
    /// The transport these settings name: `--config` read, `--bootstrap`
    /// over it.
    pub fn connect(&self) -> Result<Arc<dyn Transport>> {
        let mut config = match &self.config {
            Some(path) => KafkaConfig::from_properties_file(path)
                .map_err(|e| Failure::usage(format!("--config {}: {e}", path.display())))?,
            None => KafkaConfig::default(),
        };
        if let Some(b) = &self.bootstrap {
            config = config.bootstrap(b);
        }
        if config.bootstrap_servers().is_empty() {
            return Err(Failure::usage(
                "no broker: give --bootstrap host:port (or KAFKA_BOOTSTRAP), or bootstrap.servers in --config",
            ));
        }
        let servers = config.bootstrap_servers().join(",");
        let t = KafkaTransport::connect(config)
            .map_err(|e| Failure::kafka(format!("cannot connect to {servers}"), e))?;
        Ok(Arc::new(t))
    }

    fn derived(&self, explicit: &Option<String>, flag: &str, suffix: &str) -> Result<String> {
        match (explicit, &self.group) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(g)) => Ok(format!("{g}-{suffix}")),
            (None, None) => Err(Failure::usage(format!(
                "which topic? give --group (for <group>-{suffix}) or {flag}"
            ))),
        }
    }

    /// The dead-letter topic.
    pub fn dlt_topic(&self) -> Result<String> {
        self.derived(&self.dlt, "--dlt", "dlt")
    }

    /// The retry topic.
    pub fn retry_topic_name(&self) -> Result<String> {
        self.derived(&self.retry_topic, "--retry-topic", "retry")
    }

    /// The relay's group (as `EngineBuilder::relay_group_id` defaults it).
    pub fn relay_group_name(&self) -> Result<String> {
        self.derived(&self.relay_group, "--relay-group", "relay")
    }
}

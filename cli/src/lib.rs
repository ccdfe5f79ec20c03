//! The `kafka-retry` command line as a library: each command is a function
//! taking a transport (or its [`Reader`](kafka_retry::transport::Reader)),
//! its options and a writer for its output, so tests run them in-process
//! against the memory broker; `main.rs` only parses arguments, connects to
//! Kafka and maps a [`Failure`] to an exit code.
//!
//! See the README's "Operating kafka-retry" section for the commands.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod dead;
mod error;
mod export;
mod filter;
mod ledger;
mod progress;
mod replay;
mod status;
mod summary;
mod time;

use std::io::Write;

use kafka_retry::transport::Transport;

pub use args::{
    Cli, Command, Connection, DltCommand, ExportArgs, FilterArgs, Format, ReplayArgs, RetryCommand,
    StatusArgs, SummaryArgs,
};
pub use error::{Failure, Result};
pub use export::export;
pub use ledger::{Entry as LedgerEntry, State as LedgerState};
pub use progress::ProgressMode;
pub use replay::{replay, Planned, ReplayReport};
pub use status::status;
pub use summary::summary;

/// Runs one parsed command line against `transport`, output to `out`.
pub fn run(
    cli: &Cli,
    transport: &dyn Transport,
    progress: ProgressMode,
    out: &mut dyn Write,
) -> Result<()> {
    let reader = || {
        transport
            .reader()
            .map_err(|e| Failure::kafka("opening a reader", e))
    };
    match &cli.command {
        Command::Dlt { command } => {
            let dlt = cli.conn.dlt_topic()?;
            match command {
                DltCommand::Summary(a) => summary(&mut *reader()?, &dlt, a, out),
                DltCommand::Export(a) => export(&mut *reader()?, &dlt, a, out).map(|_| ()),
                DltCommand::Replay(a) => replay(transport, &dlt, a, progress, out).map(|_| ()),
            }
        }
        Command::Retry {
            command: RetryCommand::Status(a),
        } => {
            let topic = cli.conn.retry_topic_name()?;
            let group = cli.conn.relay_group_name()?;
            status(&mut *reader()?, &topic, &group, a, out)
        }
    }
}

//! `kafka-retry`: parse, connect, run, exit with the failure's code.

use std::io::{IsTerminal, Write};

use clap::Parser;
use kafka_retry_cli::{run, Cli, ProgressMode};

fn main() {
    let cli = Cli::parse();
    let progress = if std::io::stderr().is_terminal() {
        ProgressMode::Bar
    } else {
        ProgressMode::Lines
    };
    // Check the topic flags before connecting: a missing --group is a usage
    // error whether or not the broker is up.
    let names = match &cli.command {
        kafka_retry_cli::Command::Dlt { .. } => cli.conn.dlt_topic().map(drop),
        kafka_retry_cli::Command::Retry { .. } => cli.conn.retry_topic_name().map(drop),
    };
    let result = names
        .and_then(|()| cli.conn.connect())
        .and_then(|transport| {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            run(&cli, &*transport, progress, &mut out)?;
            out.flush()?;
            Ok(())
        });
    if let Err(f) = result {
        let _ = writeln!(std::io::stderr(), "kafka-retry: error: {f}");
        std::process::exit(f.code);
    }
}

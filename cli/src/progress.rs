//! Replay progress: a bar with counts and ETA on a terminal, a plain log
//! line every few seconds otherwise, or nothing (tests).

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// indicatif's bar on stderr.
    Bar,
    /// A line on stderr every 2 s.
    Lines,
    /// Nothing.
    #[default]
    Off,
}

/// How often [`ProgressMode::Lines`] writes a line.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// A running progress display.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    /// Starts one for `total` records.
    pub fn new(mode: ProgressMode, total: u64) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} replayed  {per_sec}  eta {eta}")
            {
                b.set_style(style);
            }
            b
        });
        let now = Instant::now();
        Progress {
            mode,
            bar,
            total,
            done: 0,
            start: now,
            last_line: now,
        }
    }

    /// `n` more records done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if self.mode == ProgressMode::Lines && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            self.line();
        }
    }

    fn line(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 {
            format!(
                "{:.0}s",
                (self.total - self.done.min(self.total)) as f64 / rate
            )
        } else {
            "?".into()
        };
        let _ = writeln!(
            std::io::stderr(),
            "kafka-retry: replayed {}/{} ({:.1}/s, eta {eta})",
            self.done,
            self.total,
            rate
        );
    }

    /// Ends the display.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.mode == ProgressMode::Lines {
            self.line();
        }
    }
}

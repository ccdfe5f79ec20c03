//! A small `metrics` recorder that renders the Prometheus text format:
//! counters, gauges and bucketed histograms, with help texts. Written here
//! rather than taken from `metrics-exporter-prometheus`, whose dependencies
//! need a newer Rust than this crate's MSRV; used by
//! examples/metrics_prometheus.rs and tests/engine_metrics.rs.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Histogram bucket bounds, in seconds.
pub const BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0015, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A histogram: cumulative bucket counts, a sum and a count.
#[derive(Debug)]
pub struct Buckets {
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if value <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + value).to_bits())
            });
    }
}

impl Buckets {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    /// Values recorded at or below `bound` (one of [`BUCKETS`]).
    pub fn at_most(&self, bound: f64) -> u64 {
        let i = BUCKETS
            .iter()
            .position(|b| *b == bound)
            .expect("a bucket bound");
        self.counts[i].load(Ordering::Relaxed)
    }
    /// The sum of the values.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

/// One registered metric.
#[derive(Debug, Clone)]
pub enum Value {
    Counter(Arc<AtomicU64>),
    /// f64 bits.
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

#[derive(Debug, Default)]
struct Inner {
    /// name -> rendered labels -> value.
    metrics: Mutex<BTreeMap<String, BTreeMap<String, Value>>>,
    help: Mutex<HashMap<String, String>>,
}

/// The recorder; clones share their metrics.
#[derive(Debug, Clone, Default)]
pub struct TextRecorder(Arc<Inner>);

fn labels(key: &Key) -> String {
    let mut v: Vec<String> = key
        .labels()
        .map(|l| {
            format!(
                "{}=\"{}\"",
                l.key(),
                l.value().replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    v.sort();
    v.join(",")
}

impl TextRecorder {
    /// Installs a clone as the global recorder and returns this one, for
    /// rendering.
    pub fn install() -> TextRecorder {
        let r = TextRecorder::default();
        metrics::set_global_recorder(r.clone()).expect("no recorder installed yet");
        r
    }

    fn register(&self, key: &Key, make: impl FnOnce() -> Value) -> Value {
        let mut m = self.0.metrics.lock().unwrap();
        m.entry(key.name().to_string())
            .or_default()
            .entry(labels(key))
            .or_insert_with(make)
            .clone()
    }

    /// The metric `name` with `labels` rendered as `a="x",b="y"` (sorted).
    pub fn get(&self, name: &str, labels: &str) -> Option<Value> {
        self.0
            .metrics
            .lock()
            .unwrap()
            .get(name)?
            .get(labels)
            .cloned()
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let help = self.0.help.lock().unwrap();
        for (name, series) in self.0.metrics.lock().unwrap().iter() {
            let kind = match series.values().next() {
                Some(Value::Counter(_)) => "counter",
                Some(Value::Gauge(_)) => "gauge",
                Some(Value::Histogram(_)) => "histogram",
                None => continue,
            };
            if let Some(h) = help.get(name) {
                let _ = writeln!(out, "# HELP {name} {h}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in series {
                let braces = |extra: &str| {
                    let all = [labels.as_str(), extra]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(",");
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!("{{{all}}}")
                    }
                };
                match value {
                    Value::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), c.load(Ordering::Relaxed));
                    }
                    Value::Gauge(g) => {
                        let v = f64::from_bits(g.load(Ordering::Relaxed));
                        let _ = writeln!(out, "{name}{} {v}", braces(""));
                    }
                    Value::Histogram(h) => {
                        for (b, c) in BUCKETS.iter().zip(&h.counts) {
                            let le = format!("le=\"{b}\"");
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {}",
                                braces(&le),
                                c.load(Ordering::Relaxed)
                            );
                        }
                        let _ =
                            writeln!(out, "{name}_bucket{} {}", braces("le=\"+Inf\""), h.count());
                        let _ = writeln!(out, "{name}_sum{} {}", braces(""), h.sum());
                        let _ = writeln!(out, "{name}_count{} {}", braces(""), h.count());
                    }
                }
            }
        }
        out
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.0
            .help
            .lock()
            .unwrap()
            .insert(key.as_str().to_string(), description.to_string());
    }
}

impl Recorder for TextRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description)
    }
    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description)
    }
    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description)
    }
    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.register(key, || Value::Counter(Arc::default())) {
            Value::Counter(c) => Counter::from_arc(c),
            _ => Counter::noop(),
        }
    }
    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.register(key, || Value::Gauge(Arc::default())) {
            Value::Gauge(g) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }
    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let make = || {
            Value::Histogram(Arc::new(Buckets {
                counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum: AtomicU64::new(0),
            }))
        };
        match self.register(key, make) {
            Value::Histogram(h) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

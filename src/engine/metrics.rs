//! The `metrics` feature: the engine's counters and gauges through the
//! `metrics` facade, and two histograms (handler time, relay lateness).
//!
//! Counters and gauges cost nothing on the hot paths: the consumer thread
//! copies the [`Stats`] snapshot into handles registered once, every
//! [`PUBLISH_INTERVAL`] and at shutdown (`Counter::absolute`, so a
//! counter is exactly the `Stats` field). The histograms are recorded per
//! record through handles registered once (no per-record key lookup or
//! allocation in the engine). Handles are registered when the engine is
//! built: install the recorder before `build()`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};

use super::health::{HealthBoard, HealthStatus};
use crate::record::TopicPartition;
use crate::stats::Stats;

/// How often the consumer thread publishes the counters and gauges.
pub(crate) const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// Metric names, with their type and meaning (the README's table).
pub(crate) mod names {
    pub const RECEIVED: &str = "kafka_retry_records_received_total";
    pub const DONE: &str = "kafka_retry_records_done_total";
    pub const RETRIED: &str = "kafka_retry_records_retried_total";
    pub const RELAYED: &str = "kafka_retry_records_relayed_total";
    pub const PRIVATE: &str = "kafka_retry_records_redelivered_private_total";
    pub const HELD: &str = "kafka_retry_records_held_total";
    pub const DEAD_LETTERED: &str = "kafka_retry_records_dead_lettered_total";
    pub const DROPPED: &str = "kafka_retry_records_dropped_total";
    pub const PANICS: &str = "kafka_retry_handler_panics_total";
    pub const REBALANCES: &str = "kafka_retry_rebalances_total";
    pub const RELAY_REBALANCES: &str = "kafka_retry_relay_rebalances_total";
    pub const SEND_ERRORS: &str = "kafka_retry_send_errors_total";
    pub const COMMIT_ERRORS: &str = "kafka_retry_commit_errors_total";
    pub const AUTH_FAILURES: &str = "kafka_retry_auth_failures_total";
    pub const TRIPS: &str = "kafka_retry_dead_letter_limit_trips_total";
    pub const IN_FLIGHT: &str = "kafka_retry_records_in_flight";
    pub const PARKED: &str = "kafka_retry_records_parked";
    pub const UNINDEXED: &str = "kafka_retry_records_parked_unindexed";
    pub const GONE: &str = "kafka_retry_records_parked_gone_total";
    pub const HELD_WAITING: &str = "kafka_retry_records_held_waiting";
    pub const HOLD_ALL: &str = "kafka_retry_key_order_hold_all_total";
    pub const ASSIGNED: &str = "kafka_retry_partitions_assigned";
    pub const PAUSED: &str = "kafka_retry_partitions_paused";
    pub const RELAY_ASSIGNED: &str = "kafka_retry_relay_partitions_assigned";
    pub const DLT_PAUSED: &str = "kafka_retry_dead_letter_limit_paused";
    pub const HEALTH: &str = "kafka_retry_health_status";
    pub const LAST_COMMIT: &str = "kafka_retry_last_commit_timestamp_seconds";
    pub const LAG: &str = "kafka_retry_consumer_lag";
    pub const HANDLER_TIME: &str = "kafka_retry_handler_duration_seconds";
    pub const RELAY_LATENESS: &str = "kafka_retry_relay_lateness_seconds";
}

/// The engine's metric handles, labelled `group`.
pub(crate) struct Metrics {
    received: Counter,
    done: Counter,
    retried: Counter,
    relayed: Counter,
    redelivered_private: Counter,
    held: Counter,
    expired: Counter,
    attempts: Counter,
    rejected: Counter,
    malformed: Counter,
    dropped: Counter,
    panics: Counter,
    rebalances: Counter,
    relay_rebalances: Counter,
    send_errors: Counter,
    commit_errors: Counter,
    auth_failures: Counter,
    trips: Counter,
    in_flight: Gauge,
    parked: Gauge,
    parked_unindexed: Gauge,
    parked_gone: Counter,
    held_waiting: Gauge,
    hold_all: Counter,
    assigned: Gauge,
    paused: Gauge,
    relay_assigned: Gauge,
    dlt_paused: Gauge,
    health: Gauge,
    last_commit: Gauge,
    /// Seconds in `Handler::handle`, per record.
    pub handler_time: Histogram,
    /// Seconds a relayed (or expired) record left the relay after its due
    /// time.
    pub relay_lateness: Histogram,
    group: String,
    /// Per origin partition owned (and seen a log end of) at the last
    /// publish; registered on first sight.
    lag: Mutex<HashMap<TopicPartition, Gauge>>,
}

impl Metrics {
    pub(crate) fn new(group: &str) -> Self {
        use names::*;
        describe();
        let g = || vec![Label::new("group", group.to_string())];
        let reason = |r: &'static str| {
            let mut l = g();
            l.push(Label::new("reason", r));
            l
        };
        Metrics {
            received: metrics::counter!(RECEIVED, g()),
            done: metrics::counter!(DONE, g()),
            retried: metrics::counter!(RETRIED, g()),
            relayed: metrics::counter!(RELAYED, g()),
            redelivered_private: metrics::counter!(PRIVATE, g()),
            held: metrics::counter!(HELD, g()),
            expired: metrics::counter!(DEAD_LETTERED, reason("expired")),
            attempts: metrics::counter!(DEAD_LETTERED, reason("attempts")),
            rejected: metrics::counter!(DEAD_LETTERED, reason("rejected")),
            malformed: metrics::counter!(DEAD_LETTERED, reason("malformed")),
            dropped: metrics::counter!(DROPPED, g()),
            panics: metrics::counter!(PANICS, g()),
            rebalances: metrics::counter!(REBALANCES, g()),
            relay_rebalances: metrics::counter!(RELAY_REBALANCES, g()),
            send_errors: metrics::counter!(SEND_ERRORS, g()),
            commit_errors: metrics::counter!(COMMIT_ERRORS, g()),
            auth_failures: metrics::counter!(AUTH_FAILURES, g()),
            trips: metrics::counter!(TRIPS, g()),
            in_flight: metrics::gauge!(IN_FLIGHT, g()),
            parked: metrics::gauge!(PARKED, g()),
            parked_unindexed: metrics::gauge!(UNINDEXED, g()),
            parked_gone: metrics::counter!(GONE, g()),
            held_waiting: metrics::gauge!(HELD_WAITING, g()),
            hold_all: metrics::counter!(HOLD_ALL, g()),
            assigned: metrics::gauge!(ASSIGNED, g()),
            paused: metrics::gauge!(PAUSED, g()),
            relay_assigned: metrics::gauge!(RELAY_ASSIGNED, g()),
            dlt_paused: metrics::gauge!(DLT_PAUSED, g()),
            health: metrics::gauge!(HEALTH, g()),
            last_commit: metrics::gauge!(LAST_COMMIT, g()),
            handler_time: metrics::histogram!(HANDLER_TIME, g()),
            relay_lateness: metrics::histogram!(RELAY_LATENESS, g()),
            group: group.to_string(),
            lag: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the lag gauge of each partition in `lags` (the origin
    /// partitions this member owns) and zeroes those of partitions it no
    /// longer owns: their new owner reports them, so a sum over the
    /// group's members stays the group's lag. (The facade cannot remove
    /// a series.)
    pub(crate) fn publish_lag(&self, lags: &[(TopicPartition, i64)]) {
        let mut gauges = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        gauges.retain(|tp, g| {
            let owned = lags.iter().any(|(t, _)| t == tp);
            if !owned {
                g.set(0.0);
            }
            owned
        });
        for (tp, lag) in lags {
            gauges
                .entry(tp.clone())
                .or_insert_with(|| {
                    let labels = vec![
                        Label::new("group", self.group.clone()),
                        Label::new("topic", tp.topic.clone()),
                        Label::new("partition", tp.partition.to_string()),
                    ];
                    metrics::gauge!(names::LAG, labels)
                })
                .set(*lag as f64);
        }
    }

    /// Copies a stats snapshot and the health status into the handles.
    pub(crate) fn publish(&self, s: &Stats, health: &HealthBoard) {
        self.received.absolute(s.received);
        self.done.absolute(s.done);
        self.retried.absolute(s.retried);
        self.relayed.absolute(s.relayed);
        self.redelivered_private.absolute(s.redelivered_private);
        self.held.absolute(s.held);
        self.expired.absolute(s.dead_lettered.expired);
        self.attempts.absolute(s.dead_lettered.attempts);
        self.rejected.absolute(s.dead_lettered.rejected);
        self.malformed.absolute(s.dead_lettered.malformed);
        self.dropped.absolute(s.dropped);
        self.panics.absolute(s.panics);
        self.rebalances.absolute(s.rebalances);
        self.relay_rebalances.absolute(s.relay_rebalances);
        self.send_errors.absolute(s.send_errors);
        self.commit_errors.absolute(s.commit_errors);
        self.auth_failures.absolute(s.auth_failures);
        self.trips.absolute(s.dead_letter_trips);
        self.in_flight.set(s.in_flight as f64);
        self.parked.set(s.parked as f64);
        self.parked_unindexed.set(s.parked_unindexed as f64);
        self.parked_gone.absolute(s.parked_gone);
        self.held_waiting.set(s.held_waiting as f64);
        self.hold_all.absolute(s.hold_all);
        self.assigned.set(s.assigned_partitions as f64);
        self.paused.set(s.paused_partitions as f64);
        self.relay_assigned.set(s.relay_partitions as f64);
        self.dlt_paused
            .set(if s.dead_letter_paused { 1.0 } else { 0.0 });
        if let Some(ms) = s.last_commit_ms {
            self.last_commit.set(ms as f64 / 1000.0);
        }
        self.health.set(match health.snapshot().status {
            HealthStatus::Running => 0.0,
            HealthStatus::Degraded => 1.0,
            HealthStatus::Stopped => 2.0,
        });
    }
}

/// Help texts, for recorders that keep them (Prometheus `# HELP`).
fn describe() {
    use metrics::Unit;
    use names::*;
    metrics::describe_counter!(RECEIVED, "Records read from the origin topics");
    metrics::describe_counter!(DONE, "Records the handler finished with Done");
    metrics::describe_counter!(RETRIED, "Records written to the retry topic");
    metrics::describe_counter!(RELAYED, "Parked records sent back to their origin topic");
    metrics::describe_counter!(
        PRIVATE,
        "Parked records handed straight to the workers (private redelivery)"
    );
    metrics::describe_counter!(
        HELD,
        "Records parked behind an earlier record of their key (key order kept)"
    );
    metrics::describe_counter!(
        DEAD_LETTERED,
        "Records written to the dead-letter topic, by reason"
    );
    metrics::describe_counter!(DROPPED, "Records given up on with no dead-letter topic");
    metrics::describe_counter!(PANICS, "Handler panics caught");
    metrics::describe_counter!(REBALANCES, "Rebalances seen by the consumer thread");
    metrics::describe_counter!(
        RELAY_REBALANCES,
        "Rebalances seen by the relay (its own group)"
    );
    metrics::describe_counter!(
        SEND_ERRORS,
        "Failed writes to the retry or dead-letter topic"
    );
    metrics::describe_counter!(COMMIT_ERRORS, "Failed offset commits");
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Polls and writes refused by SASL authentication"
    );
    metrics::describe_counter!(TRIPS, "Times the dead-letter limit tripped");
    metrics::describe_gauge!(IN_FLIGHT, "Records handed to workers and not finished");
    metrics::describe_gauge!(PARKED, "Records parked in the relay");
    metrics::describe_gauge!(
        UNINDEXED,
        "Of the parked records, those evicted from the relay's index, to be read again when there is room"
    );
    metrics::describe_gauge!(
        HELD_WAITING,
        "Key order: copies the relay keeps whole until their key's turn"
    );
    metrics::describe_counter!(
        HOLD_ALL,
        "Key order: origin partitions handed out in hold-all mode after waiting for their relay"
    );
    metrics::describe_counter!(
        GONE,
        "Parked records gone from the retry topic (retention) before they were due"
    );
    metrics::describe_gauge!(ASSIGNED, "Origin partitions assigned");
    metrics::describe_gauge!(PAUSED, "Origin partitions paused");
    metrics::describe_gauge!(RELAY_ASSIGNED, "Retry-topic partitions the relay holds");
    metrics::describe_gauge!(
        DLT_PAUSED,
        "1 while the dead-letter limit pauses the engine"
    );
    metrics::describe_gauge!(HEALTH, "0 running, 1 degraded, 2 stopped");
    metrics::describe_gauge!(
        LAG,
        "Records of an owned origin partition past the group's committed offset (log end minus committed)"
    );
    metrics::describe_gauge!(
        LAST_COMMIT,
        Unit::Seconds,
        "Unix time of the last successful commit"
    );
    metrics::describe_histogram!(
        HANDLER_TIME,
        Unit::Seconds,
        "Time in the handler per record"
    );
    metrics::describe_histogram!(
        RELAY_LATENESS,
        Unit::Seconds,
        "How late the relay sent a parked record, after its due time"
    );
}

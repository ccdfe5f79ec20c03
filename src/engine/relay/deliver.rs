//! Writing due records: popped from the heap in batches of
//! [`RELAY_BATCH`], written through the engine's one writer with up to
//! [`RELAY_IN_FLIGHT`] batches unsettled, settled in order (acknowledged:
//! done; failed: re-parked with backoff).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::backoff::Backoff;
use super::super::job::Job;
use super::super::writes::{await_ack, dead_letter_record};
use super::private::Handoff;
use super::{InFlight, Parked, Plan, Relay, Route, RELAY_BATCH};
use crate::clock::now_ms;
use crate::headers::{self, DeadReason};
use crate::policy::millis;
use crate::record::{OutRecord, Partitioning};

/// Most relay batches written and not yet settled. With one, every batch
/// waited out a whole round trip before the next was popped, so a burst
/// queued behind each slow request; queued together, the writer sends
/// the backlog in its next request. Under private redelivery (key order)
/// it stays one: a failed write re-parks a key's copy, and a later batch
/// must not settle the key's next one first.
const RELAY_IN_FLIGHT: usize = 6;
/// Longest one wait for an in-flight batch's answers while nothing is due,
/// so the loop looks again (a stop, the dead-letter limit) in between.
const SETTLE_STEP: Duration = Duration::from_millis(50);
/// Longest `deliver_due` keeps writing while records keep falling due
/// before it returns to poll and commit (its writes stay in flight): a
/// relay behind on a backlog must still commit what it settled, park new
/// records and take part in a rebalance.
const DELIVER_BUDGET: Duration = Duration::from_millis(100);

impl Relay {
    /// Writes every due record (in batches) and marks the acknowledged ones
    /// done; failed writes are re-parked with backoff. Returns early, its
    /// writes still in flight, once it has been at it for
    /// [`DELIVER_BUDGET`] while records kept falling due.
    pub(super) fn deliver_due(&mut self) {
        // Stop between batches on shutdown: what is not written stays
        // parked and uncommitted, and the next relay re-reads it. The
        // dead-letter limit holds everything parked too.
        if let Some(h) = &mut self.handoff {
            h.flush(&self.ctx);
        }
        let depth = if self.handoff.is_some() {
            1
        } else {
            RELAY_IN_FLIGHT
        };
        let started = Instant::now();
        while !self.ctx.signal.stopping() && !self.ctx.dead_letters_paused() {
            self.refill();
            // Full worker queues hold due records on the heap (uncommitted).
            if self.handoff.as_ref().is_some_and(Handoff::full) {
                break;
            }
            let now = Instant::now();
            let mut batch = Vec::with_capacity(RELAY_BATCH.min(self.heap.len()));
            while batch.len() < RELAY_BATCH {
                match self.heap.peek_due() {
                    Some(due) if due <= now => {}
                    _ => break,
                }
                let Some(p) = self.heap.pop() else { break };
                // Key order: a stale copy of a settled record is done here.
                if let Some(h) = &self.handoff {
                    if h.drop_stale(&self.ctx, &p.lease, &p.record) {
                        continue;
                    }
                }
                if !p.lease.is_revoked() {
                    batch.push(p);
                }
            }
            if batch.is_empty() {
                // Nothing due now: wait for the oldest batch's answers,
                // but only until the next record falls due (or a refill
                // is due, or a step passes, so a stop is seen): what falls
                // due during a slow write then goes out behind it, up to
                // `depth` batches, instead of waiting out its round trip.
                if self.in_flight.is_empty() {
                    return;
                }
                let step = Instant::now() + SETTLE_STEP;
                let until = self.next_wake().map_or(step, |t| t.min(step));
                let Some(f) = self.in_flight.front_mut() else {
                    return;
                };
                if f.wait_until(until) {
                    if let Some(f) = self.in_flight.pop_front() {
                        self.settle(f);
                    }
                }
                continue;
            }
            let now_wall = now_ms();
            let mut routes: Vec<Route> = batch.iter().map(|p| self.route(p, now_wall)).collect();
            // Move the records out for the write; the routes keep their kind.
            let out: Vec<OutRecord> = routes
                .iter_mut()
                .filter_map(|r| match r {
                    Route::Origin(o) | Route::Dead(o, _) => {
                        Some(std::mem::replace(o, OutRecord::new("")))
                    }
                    Route::Drop(_) | Route::Private => None,
                })
                .collect();
            // Through the engine's one writer, at once (no linger: it would
            // add to the lateness), sharing a request with the workers'
            // retry copies gathered so far; waited for in steps so a
            // shutdown is not held up by an unreachable broker.
            let pending = self.ctx.writer.send_now(out);
            self.in_flight.push_back(InFlight {
                batch,
                routes,
                pending,
                answered: Vec::new(),
                now_wall,
            });
            while self.in_flight.len() >= depth {
                let Some(f) = self.in_flight.pop_front() else {
                    break;
                };
                self.settle(f);
            }
            if started.elapsed() >= DELIVER_BUDGET {
                // Records keep falling due: poll and commit in between
                // (what is due makes the poll return at once).
                return;
            }
        }
        // Stopping (the waits give up and re-park), full worker queues, or
        // the dead-letter limit: what was written is settled in order.
        self.settle_in_flight();
    }

    /// Settles every batch in flight, oldest first.
    pub(super) fn settle_in_flight(&mut self) {
        while let Some(f) = self.in_flight.pop_front() {
            self.settle(f);
        }
    }

    /// Waits for a written batch's acknowledgements, in order, and marks
    /// the acknowledged records done; failed writes are re-parked with
    /// backoff.
    fn settle(&mut self, f: InFlight) {
        let InFlight {
            batch,
            routes,
            pending,
            answered,
            now_wall,
        } = f;
        let signal = self.ctx.signal.clone();
        let waited = answered.len();
        let mut results = answered
            .into_iter()
            .chain(pending.into_iter().skip(waited).map(|p| {
                await_ack(&p, || signal.stopping()).unwrap_or_else(|| {
                    Err(crate::Error::Timeout(
                        "relay stopped before the write was acknowledged".into(),
                    ))
                })
            }));
        for (mut p, route) in batch.into_iter().zip(routes) {
            if let (Route::Private, Some(h)) = (&route, &mut self.handoff) {
                // Done only once the worker settles it (see private.rs).
                h.push(
                    &self.ctx,
                    Job {
                        record: p.record,
                        lease: p.lease,
                        received_ms: now_wall,
                    },
                );
                continue;
            }
            let result: crate::Result<()> = match &route {
                Route::Drop(reason) => {
                    log::warn!(
                        "relay: {}@{} dropped ({}), dead-lettering is off",
                        p.record.topic_partition(),
                        p.record.offset,
                        reason.as_str()
                    );
                    self.ctx.dropped();
                    Ok(())
                }
                _ => match results.next() {
                    Some(Ok(_)) => {
                        match route {
                            Route::Dead(_, reason) => self.ctx.dead_lettered(reason),
                            _ => {
                                self.ctx.counters.relayed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(crate::Error::Protocol(
                        "producer returned fewer results than records".into(),
                    )),
                },
            };
            match result {
                Ok(()) => {
                    if let Some(h) = &mut self.handoff {
                        // Key order: dead-lettered here, its key moves on.
                        h.on_relay_settled(&self.ctx, &p.record);
                    }
                    #[cfg(feature = "metrics")]
                    self.ctx.metrics.relay_lateness.record(
                        Instant::now()
                            .saturating_duration_since(p.due)
                            .as_secs_f64(),
                    );
                    p.lease.tracker().done(p.record.offset)
                }
                Err(e) => {
                    p.failures += 1;
                    let wait = Backoff::after_failures(p.failures);
                    self.ctx
                        .counters
                        .send_failed(&format!("relay: write (next in {wait:?})"), &e);
                    // Re-parked: whole, or past the whole part indexed
                    // when the back-off is long enough.
                    self.place(p.lease, p.record, p.plan, Instant::now() + wait, p.failures);
                }
            }
        }
        if let Some(h) = &mut self.handoff {
            h.flush(&self.ctx);
        }
        self.count_parked();
    }

    /// The relay's one decision for a due record. Kept separate from the
    /// writing so another mode (hand the record straight to this group's
    /// handler pool) can slot in here.
    fn route(&self, p: &Parked, now: i64) -> Route {
        let record = &p.record;
        let dead = |headers, reason: DeadReason| -> Route {
            match dead_letter_record(&self.ctx, record, headers, reason) {
                Some(out) => Route::Dead(out, reason),
                None => Route::Drop(reason),
            }
        };
        match &p.plan {
            Plan::Malformed(reason) => dead(
                headers::malformed_headers(&record.headers, reason),
                DeadReason::Malformed,
            ),
            Plan::Retry(info) => {
                let age = now.saturating_sub(info.first_received_at);
                if age > millis(self.ctx.policy.max_retry_duration) {
                    let reason = record
                        .header(headers::REASON)
                        .and_then(|h| h.value.as_deref())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    let why = format!(
                        "expired after {} ms and {} attempts: {reason}",
                        age, info.attempts
                    );
                    dead(
                        info.headers(&record.headers, &why, Some(DeadReason::Expired)),
                        DeadReason::Expired,
                    )
                } else {
                    let partitioning = match self.topic_cache.get(info.origin_topic.as_str()) {
                        Some((Some(n), _)) if info.origin_partition < *n => {
                            Partitioning::Explicit(info.origin_partition)
                        }
                        _ => Partitioning::Default,
                    };
                    if self.handoff.is_some() {
                        return Route::Private;
                    }
                    // Headers travel as they are: first-received-at and
                    // attempts must survive the hop. Copied, not cloned:
                    // see `headers::compact`.
                    Route::Origin(OutRecord::forward(
                        record,
                        info.origin_topic.clone(),
                        partitioning,
                        headers::compact(&record.headers),
                    ))
                }
            }
        }
    }
}

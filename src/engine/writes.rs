//! Acknowledged writes: waiting for a broker's acknowledgement without
//! missing a stop, and sending again until acknowledged, by the engine's
//! one backoff schedule. An error never turns into a lost record: a write
//! that is given up on leaves its record uncommitted.

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::context::Context;
use crate::clock::now_ms;
use crate::error::Result;
use crate::headers::{self, DeadReason};
use crate::pending::Pending;
use crate::record::{Delivered, Header, OutRecord, Partitioning, Record};

/// Step of every wait for an acknowledgement, so a stop is noticed.
const ACK_STEP: Duration = Duration::from_millis(50);
/// Step of the wait between attempts.
const SLEEP_STEP: Duration = Duration::from_millis(10);

/// Waits for a write's acknowledgement in short steps, so `give_up` (a
/// revoke, a shutdown) ends the wait (`None`: the record stays
/// uncommitted; the write may still land, which is a duplicate, never a
/// loss). A broker outage can hold a single write for the producer's whole
/// delivery timeout.
pub(crate) fn await_ack(
    pending: &Pending,
    give_up: impl Fn() -> bool,
) -> Option<Result<Delivered>> {
    loop {
        if let Some(r) = pending.wait_deadline(Instant::now() + ACK_STEP) {
            return Some(r);
        }
        if give_up() {
            return None;
        }
    }
}

/// Sends again, after a failed write, until the broker acknowledges,
/// backing off between attempts. Gives up (false: the record stays
/// uncommitted) only when `give_up` says so.
///
/// With `restamp`, each new attempt rewrites `retry.enqueued-at` to now: the
/// relay counts the interval from it, so a write that succeeded only after
/// an outage must not come back early.
pub(crate) fn send_until_acked(
    ctx: &Context,
    mut record: OutRecord,
    restamp: bool,
    give_up: impl Fn() -> bool,
) -> bool {
    let mut backoff = Backoff::default();
    loop {
        let wait = backoff.next_wait();
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if give_up() {
                return false;
            }
            std::thread::sleep(SLEEP_STEP.min(wait));
        }
        if restamp {
            let now = now_ms().to_string();
            for h in record.headers.iter_mut() {
                if &h.key[..] == headers::ENQUEUED_AT.as_bytes() {
                    h.value = Some(now.clone().into());
                }
            }
        }
        let pending = ctx.producer.send_async(record.clone());
        match await_ack(&pending, &give_up) {
            Some(Ok(_)) => return true,
            Some(Err(e)) => {
                ctx.counters
                    .send_failed(&format!("write to {}", record.topic), &e);
            }
            None => return false,
        }
    }
}

/// The dead-letter copy of `record` with `headers`: on the topic the
/// dead-letter router chose (or the default one, with the router's problem
/// put first in `retry.reason`), stamped with the group and the time.
/// `None` when dead-lettering is off and the router chose nothing: the
/// caller drops the record.
pub(crate) fn dead_letter_record(
    ctx: &Context,
    record: &Record,
    mut headers: Vec<Header>,
    reason: DeadReason,
) -> Option<OutRecord> {
    let (topic, problem) = ctx.dead_letters.choose(record, reason);
    if let Some(problem) = problem {
        log::warn!(
            "{}@{}: {problem}; dead-lettering to the default topic",
            record.topic_partition(),
            record.offset
        );
        // The problem first in `retry.reason`, in its place among the
        // headers (every dead letter carries one, from `RetryInfo::headers`
        // or `malformed_headers`).
        if let Some(h) = headers
            .iter_mut()
            .rev()
            .find(|h| &h.key[..] == headers::REASON.as_bytes())
        {
            let old = h
                .value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let why = format!("{problem}; {old}");
            h.value = Some(headers::truncate(&why).to_string().into());
        }
    }
    let topic = topic?;
    headers::stamp_dead_letter(&mut headers, &ctx.group_id, now_ms());
    Some(OutRecord::forward(
        record,
        topic,
        Partitioning::Default,
        headers,
    ))
}

//! The `kafka-retry-producer` thread: its loop (take in records, write a
//! request, read a reply, wait for a retry), its own connection per leader
//! with the requests in flight on it, and the filing of replies.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use super::batching::REQUEST_BYTES;
use super::idempotence::{init_producer_id, SeqAction, DUPLICATE_SEQUENCE};
use super::retry::{on_error, Action};
use super::state::{Chunk, Flight, Inner, Item, Meta, SenderState, Work};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::pending::Completer;
use crate::record::{Delivered, Topic};
use crate::transport::kafka::client::topic_name;
use crate::transport::kafka::conn::Connection;
use crate::transport::kafka::errors::code_name;
use crate::transport::kafka::records::{encode_batch_as, ProducerFields};

/// The sender loop (see the module docs). A bug that panics must not kill
/// the thread every caller depends on: the records it held are failed and
/// it starts over with new connections.
pub(super) fn run_sender(inner: &Inner, rx: &Receiver<Work>) {
    let mut sender = SenderState::new(inner);
    loop {
        match catch_unwind(AssertUnwindSafe(|| sender.step(rx))) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                log::error!("kafka-retry-producer panicked; failing the records it held");
                let open = sender.open;
                sender.abandon("kafka-retry-producer panicked while producing");
                sender = SenderState::new(inner);
                sender.open = open;
            }
        }
    }
}

impl<'a> SenderState<'a> {
    /// One turn of the loop: take in records, then write one request or
    /// read one reply or wait for a retry. `false` once the queue is closed
    /// and every record answered.
    pub(super) fn step(&mut self, rx: &Receiver<Work>) -> bool {
        self.counts.clear();
        if self.held == 0 {
            if !self.open {
                return false;
            }
            match rx.recv() {
                Ok(work) => self.intake(work),
                Err(_) => {
                    self.open = false;
                    return false;
                }
            }
        }
        self.drain(rx);
        self.release_due();
        let in_flight = self.in_flight();
        if self.sendable() {
            if in_flight == 0 {
                self.linger(rx);
                self.send_some();
                return true;
            }
            // A full request, or nothing more is coming: every unanswered
            // record is in hand and came with a whole `send_batch` (the
            // rest of a big batch). Otherwise wait for a reply rather than
            // write a small request: an async caller may be about to add
            // more, and `send` callers just answered are waking up to.
            if self.backlog_bytes >= REQUEST_BYTES
                || (self.inner.unanswered.load(Ordering::SeqCst) <= self.held
                    && self.backlog.iter().all(|i| i.meta.batch))
            {
                self.send_some();
                return true;
            }
        }
        if in_flight > 0 {
            self.read_oldest();
            return true;
        }
        // Only parked records (and records blocked behind them): wait for
        // the first to be due, taking in new records meanwhile.
        match self.waiting.iter().map(|(d, _)| *d).min() {
            Some(due) if self.open => match rx.recv_deadline(due) {
                Ok(work) => self.intake(work),
                Err(RecvTimeoutError::Disconnected) => self.open = false,
                Err(RecvTimeoutError::Timeout) => {}
            },
            Some(due) => thread::sleep(due.saturating_duration_since(Instant::now())),
            None => {
                // Nothing held after all (`held` is off: a bug). Never spin.
                log::error!(
                    "kafka-retry-producer: {} record(s) counted but not held",
                    self.held
                );
                self.held = 0;
            }
        }
        true
    }

    /// Takes in what is queued, without blocking, until a request's worth
    /// is on hand.
    pub(super) fn drain(&mut self, rx: &Receiver<Work>) {
        while self.open && self.backlog_bytes < REQUEST_BYTES {
            match rx.try_recv() {
                Ok(work) => self.intake(work),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    /// With nothing in flight: waits for more records until a request is
    /// full, `linger` has passed since the oldest queued record arrived (or
    /// since the last reply, if later), or every unanswered record is in
    /// hand.
    pub(super) fn linger(&mut self, rx: &Receiver<Work>) {
        let Some(oldest) = self.backlog.iter().map(|i| i.meta.arrived).min() else {
            return;
        };
        let start = self.last_reply.map_or(oldest, |t| t.max(oldest));
        let deadline = start + self.config.linger;
        while self.open && self.backlog_bytes < REQUEST_BYTES {
            // Every unanswered record is in hand: its caller is blocked, so
            // no one else is about to add one; stop lingering. While this
            // thread runs only it lowers `unanswered` (a caller lowers it
            // only when the queue is gone), so the check cannot miss a record.
            if self.inner.unanswered.load(Ordering::SeqCst) <= self.held {
                break;
            }
            let work = match rx.try_recv() {
                Ok(w) => w,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    break;
                }
                Err(TryRecvError::Empty) => match rx.recv_deadline(deadline) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.open = false;
                        break;
                    }
                },
            };
            self.intake(work);
        }
    }

    /// Answers records the thread holds (lowering the counts first: a
    /// caller that sends again right away is then counted once, by its new
    /// record).
    pub(super) fn answer(&mut self, answers: Vec<(Completer, Result<Delivered>)>) {
        if answers.is_empty() {
            return;
        }
        self.held -= answers.len();
        self.inner
            .unanswered
            .fetch_sub(answers.len(), Ordering::SeqCst);
        for (reply, result) in answers {
            reply.complete(result);
        }
    }

    /// Answers every record of `metas` with (a copy of) `e`.
    pub(super) fn fail_all(&mut self, metas: Vec<Meta>, e: &Error) {
        let answers = metas
            .into_iter()
            .map(|m| (m.reply, Err(e.clone())))
            .collect();
        self.answer(answers);
    }

    pub(super) fn in_flight(&self) -> usize {
        self.links.values().map(|l| l.flights.len()).sum()
    }

    /// Encodes and writes one Produce request to `leader`, first reading
    /// the oldest reply there if `max_in_flight` requests are unanswered.
    pub(super) fn send_request(&mut self, leader: i32, mut chunks: Vec<Chunk>) {
        let had_conn = self.links.get(&leader).is_some_and(|l| l.conn.is_some());
        let producer = match self.producer_ids() {
            Ok(p) => p,
            Err(e) => {
                for chunk in chunks {
                    self.fail_or_retry(&chunk.tp, chunk.records, chunk.metas, e.clone());
                }
                return;
            }
        };
        if producer.is_some() && self.idem.as_ref().is_some_and(|i| i.reset_due) {
            // A reply read while taking the ids asked for another reset:
            // these records go back for the next round.
            for chunk in chunks.into_iter().rev() {
                self.requeue(chunk);
            }
            return;
        }
        // Records numbered in an older generation are numbered again.
        if let Some(idem) = &self.idem {
            for chunk in &mut chunks {
                if !chunk.metas.iter().all(|m| idem.current(m.seq)) {
                    for m in &mut chunk.metas {
                        m.seq = None;
                    }
                }
            }
        }
        let max = self.config.max_in_flight.max(1);
        while self
            .links
            .get(&leader)
            .is_some_and(|l| l.flights.len() >= max)
        {
            self.read_reply(leader);
        }
        // KIP-368: a connection whose SASL session is nearly over
        // re-authenticates inside its next `send`, which it does only with
        // nothing in flight: read the replies owed first, so the exchange
        // never waits behind (or cuts into) a pipelined Produce.
        while self.links.get(&leader).is_some_and(|l| {
            !l.flights.is_empty() && l.conn.as_ref().is_some_and(Connection::reauth_due)
        }) {
            self.read_reply(leader);
        }
        if had_conn && self.links.get(&leader).is_some_and(|l| l.conn.is_none()) {
            // A reply read above broke the connection: the records in flight
            // on it go first (resent in order); these must not overtake them
            // on the new connection.
            self.requeue_behind_resends(chunks);
            return;
        }
        let link = self.links.entry(leader).or_default();
        if link.conn.is_none() {
            if let Some(t) = link.last_failure {
                let wait = self.config.retry_backoff.saturating_sub(t.elapsed());
                if !wait.is_zero() {
                    thread::sleep(wait);
                }
            }
            match self.inner.client.connect_node(leader) {
                Ok(c) => {
                    link.conn = Some(c);
                    link.last_failure = None;
                }
                Err(e) => {
                    link.last_failure = Some(Instant::now());
                    for chunk in chunks {
                        self.fail_or_retry(&chunk.tp, chunk.records, chunk.metas, e.clone());
                    }
                    return;
                }
            }
        }

        let now = now_ms();
        let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
        let mut sent: Vec<Chunk> = Vec::with_capacity(chunks.len());
        for mut chunk in chunks {
            let mut fresh = None;
            let fields = match (producer, self.idem.as_mut()) {
                (Some((producer_id, producer_epoch)), Some(idem)) => {
                    let seq = match chunk.metas.first().and_then(|m| m.seq) {
                        Some(s) => s,
                        None => {
                            let n = i32::try_from(chunk.metas.len()).unwrap_or(i32::MAX);
                            let s = idem.assign(&chunk.tp, n);
                            fresh = Some(s);
                            for m in &mut chunk.metas {
                                m.seq = Some(s);
                            }
                            s
                        }
                    };
                    ProducerFields {
                        producer_id,
                        producer_epoch,
                        base_sequence: seq.1,
                    }
                }
                _ => ProducerFields::NONE,
            };
            match encode_batch_as(&chunk.records, now, self.inner.compression, fields) {
                Ok(batch) => {
                    let mut pd = PartitionProduceData::default();
                    pd.index = chunk.tp.1;
                    pd.records = Some(batch);
                    topics.entry(chunk.tp.0.clone()).or_default().push(pd);
                    sent.push(chunk);
                }
                // Not a retry decision: a batch that cannot be encoded never
                // will be (see `on_error`). It was never sent: its numbers
                // go back.
                Err(e) => {
                    if let (Some(s), Some(idem)) = (fresh, self.idem.as_mut()) {
                        idem.unassign(&chunk.tp, s);
                    }
                    self.fail_all(chunk.metas, &e);
                }
            }
        }
        if sent.is_empty() {
            return;
        }
        if log::log_enabled!(log::Level::Trace) {
            for c in &sent {
                log::trace!(
                    "kafka: Produce to {leader}: {}-{} seq {:?} x{} first {:?}",
                    c.tp.0,
                    c.tp.1,
                    c.metas.first().and_then(|m| m.seq),
                    c.metas.len(),
                    c.records.first().and_then(|r| r.key.clone())
                );
            }
        }
        let mut req = ProduceRequest::default();
        req.acks = self.config.acks.wire();
        req.timeout_ms = i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX);
        req.topic_data = topics
            .into_iter()
            .map(|(t, parts)| {
                let mut td = TopicProduceData::default();
                td.name = topic_name(&t);
                td.partition_data = parts;
                td
            })
            .collect();
        // The reply may take up to the broker-side timeout plus the trip.
        let timeout = self.config.request_timeout + self.config.request_timeout / 2;
        let link = self.links.entry(leader).or_default();
        let result = match link.conn.as_mut() {
            Some(conn) => conn
                .version(ApiKey::Produce)
                .and_then(|v| conn.send(v, &req, timeout)),
            None => Err(Error::Protocol("producer connection missing (bug)".into())),
        };
        drop(req);
        match result {
            Ok(s) => {
                self.seq += 1;
                link.flights.push_back(Flight {
                    sent: s,
                    chunks: sent,
                    seq: self.seq,
                });
            }
            Err(e) => {
                if link.conn.as_ref().is_some_and(Connection::is_broken) {
                    // Whatever was in flight on it is lost with it.
                    let mut lost: Vec<Chunk> = self.break_link(leader);
                    lost.extend(sent);
                    self.connection_failed(lost, &e);
                } else {
                    for chunk in sent {
                        self.fail_or_retry(&chunk.tp, chunk.records, chunk.metas, e.clone());
                    }
                }
            }
        }
    }

    /// Drops `leader`'s connection; returns the chunks of every request
    /// that was in flight on it, oldest first.
    pub(super) fn break_link(&mut self, leader: i32) -> Vec<Chunk> {
        let Some(link) = self.links.get_mut(&leader) else {
            return Vec::new();
        };
        link.conn = None;
        link.flights.drain(..).flat_map(|f| f.chunks).collect()
    }

    /// Reads the oldest reply of all connections.
    pub(super) fn read_oldest(&mut self) {
        let oldest = self
            .links
            .iter()
            .filter_map(|(&id, l)| l.flights.front().map(|f| (f.seq, id)))
            .min();
        if let Some((_, leader)) = oldest {
            self.read_reply(leader);
        }
    }

    /// Reads the oldest reply from `leader` and files it.
    pub(super) fn read_reply(&mut self, leader: i32) {
        let Some(link) = self.links.get_mut(&leader) else {
            return;
        };
        let Some(flight) = link.flights.pop_front() else {
            return;
        };
        let result = match link.conn.as_mut() {
            Some(conn) => conn.receive(flight.sent),
            None => Err(Error::Protocol("producer connection missing (bug)".into())),
        };
        self.last_reply = Some(Instant::now());
        match result {
            Ok(resp) => self.file_response(&resp, flight.chunks),
            Err(e) => {
                let mut lost = flight.chunks;
                lost.extend(self.break_link(leader));
                self.connection_failed(lost, &e);
            }
        }
    }

    /// Files the chunks of requests lost with their connection: after an
    /// I/O error each record gets one immediate resend on a new connection
    /// (an idle connection the broker closed fails that way), then the
    /// usual retry rules apply.
    pub(super) fn connection_failed(&mut self, chunks: Vec<Chunk>, e: &Error) {
        let resend_at_once = matches!(
            on_error(e),
            Action::Retry {
                resend_at_once: true,
                ..
            }
        );
        let mut resend: Vec<Item> = Vec::new();
        for chunk in chunks {
            let mut records = Vec::new();
            let mut metas = Vec::new();
            for (record, mut meta) in chunk.records.into_iter().zip(chunk.metas) {
                if resend_at_once && !meta.reconnected {
                    meta.reconnected = true;
                    resend.push(Item { record, meta });
                } else {
                    records.push(record);
                    metas.push(meta);
                }
            }
            if !metas.is_empty() {
                self.fail_or_retry(&chunk.tp, records, metas, e.clone());
            }
        }
        if !resend.is_empty() {
            log::debug!(
                "kafka: {e}; resending {} record(s) on a new connection",
                resend.len()
            );
        }
        for item in resend.into_iter().rev() {
            self.backlog_bytes += item.meta.size;
            self.backlog.push_front(item);
        }
    }

    pub(super) fn file_response(&mut self, resp: &ProduceResponse, chunks: Vec<Chunk>) {
        for chunk in chunks {
            let (topic, partition) = &chunk.tp;
            let ctx = format!("Produce {topic}-{partition}");
            let part = resp
                .responses
                .iter()
                .filter(|t| &*t.name.0 == topic.as_str())
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == *partition);
            let part = match part {
                Some(p) => p,
                None => {
                    let e = Error::Protocol(format!("{ctx}: partition missing from the reply"));
                    self.fail_or_retry(&chunk.tp, chunk.records, chunk.metas, e);
                    continue;
                }
            };
            let code = part.error_code;
            let seq = chunk.metas.first().and_then(|m| m.seq);
            log::trace!(
                "kafka: reply {topic}-{partition} seq {seq:?}: code {code} base {}",
                part.base_offset
            );
            let action = match &self.idem {
                Some(idem) if code != 0 => idem.on_code(&chunk.tp, seq, code),
                _ => SeqAction::Usual,
            };
            if action != SeqAction::Usual {
                let ctx = format!("{ctx}: {} ({code})", code_name(code));
                log::debug!(
                    "kafka: {ctx}: {action:?} (batch {seq:?} of {} record(s))",
                    chunk.metas.len()
                );
                self.on_sequence_error(chunk, action, Error::kafka(ctx, code));
                continue;
            }
            match code {
                // A duplicate: the broker has the batch from an earlier
                // attempt whose acknowledgement was lost. Success (as Java);
                // the offset is the one the broker reports, -1 if none.
                0 | DUPLICATE_SEQUENCE => {
                    let base = part.base_offset;
                    if let Some(idem) = self.idem.as_mut() {
                        let n = i32::try_from(chunk.metas.len()).unwrap_or(i32::MAX);
                        idem.acked(&chunk.tp, seq, n);
                    }
                    // One shared name for the chunk's answers, not a copy each.
                    let shared = Topic::from(topic.as_str());
                    let answers = chunk
                        .metas
                        .into_iter()
                        .enumerate()
                        .map(|(k, m)| {
                            let delivered = Delivered {
                                topic: shared.clone(),
                                partition: *partition,
                                offset: if base < 0 { -1 } else { base + k as i64 },
                            };
                            (m.reply, Ok(delivered))
                        })
                        .collect();
                    self.answer(answers);
                }
                code => {
                    let ctx = match &part.error_message {
                        Some(m) if !m.is_empty() => format!("{ctx} ({})", &**m),
                        _ => ctx,
                    };
                    log::debug!("kafka: {ctx}: {} ({code})", code_name(code));
                    self.fail_or_retry(
                        &chunk.tp,
                        chunk.records,
                        chunk.metas,
                        Error::kafka(ctx, code),
                    );
                }
            }
        }
    }

    /// Answers every record held with an error (after a panic).
    pub(super) fn abandon(&mut self, why: &str) {
        let mut replies: Vec<Completer> = Vec::new();
        replies.extend(self.backlog.drain(..).map(|i| i.meta.reply));
        replies.extend(self.waiting.drain(..).map(|(_, i)| i.meta.reply));
        for link in self.links.values_mut() {
            for flight in link.flights.drain(..) {
                for chunk in flight.chunks {
                    replies.extend(chunk.metas.into_iter().map(|m| m.reply));
                }
            }
        }
        // Records dropped while unwinding answered themselves (a dropped
        // Completer answers with an error) but are still counted in `held`.
        self.inner.unanswered.fetch_sub(self.held, Ordering::SeqCst);
        self.held = 0;
        for reply in replies {
            reply.complete(Err(Error::Thread(why.to_string())));
        }
    }
}

impl<'a> SenderState<'a> {
    /// The producer id and epoch to write batches with; `None` when the
    /// producer is not idempotent. Takes a new id when a reset is due
    /// (after reading every reply in flight) or none is known yet.
    pub(super) fn producer_ids(&mut self) -> Result<Option<(i64, i16)>> {
        let Some(idem) = &self.idem else {
            return Ok(None);
        };
        if idem.reset_due {
            while self.in_flight() > 0 {
                self.read_oldest();
            }
            if let Some(idem) = self.idem.as_mut() {
                log::debug!("kafka: idempotent producer: taking a new producer id");
                idem.start_over();
            }
        }
        if let Some(ids) = self.idem.as_ref().and_then(|i| i.ids) {
            return Ok(Some(ids));
        }
        let ids = init_producer_id(&self.inner.client)?;
        log::debug!("kafka: producer id {} epoch {}", ids.0, ids.1);
        if let Some(idem) = self.idem.as_mut() {
            idem.ids = Some(ids);
        }
        Ok(Some(ids))
    }

    /// Puts a chunk's records back at the front of the backlog, as they
    /// were (not a failure).
    pub(super) fn requeue(&mut self, chunk: Chunk) {
        for (record, meta) in chunk.records.into_iter().zip(chunk.metas).rev() {
            self.backlog_bytes += meta.size;
            self.backlog.push_front(Item { record, meta });
        }
    }

    /// Puts chunks that were about to be written back into the backlog,
    /// behind the records at its front that were sent before (resends after
    /// a broken connection, numbered batches): written after those, as they
    /// would have been.
    pub(super) fn requeue_behind_resends(&mut self, chunks: Vec<Chunk>) {
        let at = self
            .backlog
            .iter()
            .take_while(|i| i.meta.reconnected || i.meta.seq.is_some())
            .count();
        let tail = self.backlog.split_off(at);
        for chunk in chunks {
            for (record, meta) in chunk.records.into_iter().zip(chunk.metas) {
                self.backlog_bytes += meta.size;
                self.backlog.push_back(Item { record, meta });
            }
        }
        self.backlog.extend(tail);
    }

    /// Files a batch the broker refused with an idempotence code.
    pub(super) fn on_sequence_error(&mut self, chunk: Chunk, action: SeqAction, e: Error) {
        match action {
            SeqAction::Usual | SeqAction::Retry => {
                self.park(&chunk.tp, chunk.records, chunk.metas, e, false);
            }
            SeqAction::ResetAndRetry => {
                if let Some(idem) = self.idem.as_mut() {
                    idem.reset_due = true;
                }
                self.park(&chunk.tp, chunk.records, chunk.metas, e, false);
            }
            SeqAction::ResetAndFail => {
                if let Some(idem) = self.idem.as_mut() {
                    idem.reset_due = true;
                }
                self.fail_all(chunk.metas, &e);
            }
        }
    }
}

//! The acknowledged producer.
//!
//! Design: every write goes through one background thread
//! (`kafka-retry-producer`). `send_async` queues a record, `send` queues one
//! and waits for it, `send_batch` queues its records together and waits for
//! all of them. The thread picks each record's partition as it arrives,
//! packs records into Produce requests of about [`REQUEST_BYTES`] (one record
//! batch per partition per request: Kafka rejects more with INVALID_RECORD)
//! and keeps up to `max_in_flight` requests unanswered per broker
//! connection: it encodes and writes the next request while the broker works
//! on the earlier ones. Replies are read in order (Kafka answers one
//! connection's requests in order; correlation ids are still checked), and
//! each completes its records' `Pending`s at once.
//!
//! When to write a request:
//! - Nothing in flight: gather records until a request is full, `linger` has
//!   passed since the oldest arrived, or the thread holds every unanswered
//!   record (callers block until answered, so nobody else is about to add
//!   one, and waiting out `linger` would only idle them).
//! - Requests in flight: write full requests, or the rest of `send_batch`
//!   calls when nothing else is unanswered; otherwise read the oldest reply
//!   first (records keep queueing meanwhile). A small request costs the
//!   broker about as much as a big one, and async callers, or `send` callers
//!   waking up, are usually about to add more.
//!
//! Invariants:
//! - A record is reported delivered only from the reply to the request that
//!   carried it. A broken connection (I/O error, timeout, bad reply) fails
//!   every request in flight on it; their records are retried (an I/O error
//!   once at once on a new connection, as an idle connection the broker
//!   closed would cause, then with back-off) or failed.
//! - Retriable per-partition errors, timeouts and dropped connections park
//!   the records with exponential back-off (at most `max_retries` times,
//!   none after `delivery_timeout`); when due, their topics' metadata is
//!   refreshed if the error calls for it and they go first in line. A
//!   partition with records parked holds back its newer records, so with
//!   `max_in_flight(1)` each partition keeps the order records were sent in.
//!   With more in flight, requests already written cannot be held back:
//!   without idempotence a retried record may land after later ones (see
//!   [`KafkaConfig::max_in_flight`](super::config::KafkaConfig::max_in_flight));
//!   with it (the default) the broker refuses the later batches
//!   (OUT_OF_ORDER_SEQUENCE_NUMBER), they are retried, and retried batches
//!   go out in sequence order (`idempotence`), one at a time per partition
//!   with the partition's new records behind them (`batching::RetryGate`,
//!   as Java's accumulator): after a broken connection the resends are not
//!   overtaken by requests written on the new one.
//! - `held` counts the records the thread holds (queued for a request,
//!   parked, in flight); `Inner::unanswered` counts those plus the ones
//!   still in the channel. Both are lowered before a record is answered.
//!
//! Files: this one is the front ([`KafkaProducer`]: queueing records, and
//! waiting for them: a `send_batch` waits on one `PendingBatch`, woken once
//! for the whole batch); `state` holds the types the front and the thread
//! share; `batching` accumulates records per partition and plans requests;
//! `sender` is the `kafka-retry-producer` thread (connections, requests in
//! flight, replies); `retry` parks failed records and decides what an error
//! means for them; `idempotence` holds the producer id, the sequences and
//! what the idempotence error codes mean.

mod batching;
mod idempotence;
#[cfg(test)]
mod idempotence_tests;
mod retry;
mod sender;
mod state;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

use super::client::Client;
use super::config::Compression;
use crate::error::{Error, Result};
use crate::pending::Pending;
use crate::record::{Delivered, OutRecord};
use crate::transport::Producer;
use sender::run_sender;
use state::{Inner, Job, Work};

/// The Kafka producer (see the module docs).
pub(crate) struct KafkaProducer {
    inner: Arc<Inner>,
    queue: Option<Sender<Work>>,
    sender: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// A producer on `client`, compressing by its config; starts the
    /// `kafka-retry-producer` thread.
    pub(crate) fn new(client: Arc<Client>) -> Result<KafkaProducer> {
        let compression = client.config().compression;
        KafkaProducer::with_compression(client, compression)
    }

    /// [`KafkaProducer::new`], compressing with `compression`.
    pub(crate) fn with_compression(
        client: Arc<Client>,
        compression: Compression,
    ) -> Result<KafkaProducer> {
        let inner = Arc::new(Inner {
            client,
            next: AtomicU32::new(0),
            unanswered: AtomicUsize::new(0),
            compression,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread_inner = inner.clone();
        let sender = thread::Builder::new()
            .name("kafka-retry-producer".into())
            .spawn(move || run_sender(&thread_inner, &rx))
            .map_err(|e| Error::Thread(format!("start kafka-retry-producer: {e}")))?;
        Ok(KafkaProducer {
            inner,
            queue: Some(tx),
            sender: Some(sender),
        })
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        // Disconnecting the queue ends the sender loop once it has answered
        // every record it holds.
        self.queue = None;
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }
}

impl KafkaProducer {
    /// Queues one record for `send` / `send_async`.
    fn enqueue(&self, record: OutRecord) -> Pending {
        let Some(queue) = self.queue.as_ref() else {
            return Pending::ready(Err(Error::Closed));
        };
        let (pending, reply) = Pending::new();
        // Raised before queueing, so the sender never holds a record it has
        // not counted (see `SenderState::linger`).
        self.inner.unanswered.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            record,
            reply,
            batch: false,
        };
        if let Err(e) = queue.send(Work::One(job)) {
            self.inner.unanswered.fetch_sub(1, Ordering::SeqCst);
            if let Work::One(job) = e.into_inner() {
                job.reply.complete(Err(Error::Closed));
            }
        }
        pending
    }
}

impl Producer for KafkaProducer {
    fn send(&self, record: OutRecord) -> Result<Delivered> {
        self.send_async(record).wait()
    }

    fn send_async(&self, record: OutRecord) -> Pending {
        self.enqueue(record)
    }

    fn send_batch(&self, records: Vec<OutRecord>) -> Vec<Result<Delivered>> {
        let Some(queue) = self.queue.as_ref() else {
            return records.iter().map(|_| Err(Error::Closed)).collect();
        };
        if records.is_empty() {
            return Vec::new();
        }
        let n = records.len();
        // One slot for the whole batch: the caller wakes once, when the
        // last record is answered (see `PendingBatch`).
        let (pending, completers) = Pending::batch(n);
        let jobs: Vec<Job> = records
            .into_iter()
            .zip(completers)
            .map(|(record, reply)| Job {
                record,
                reply,
                batch: true,
            })
            .collect();
        self.inner.unanswered.fetch_add(n, Ordering::SeqCst);
        if let Err(e) = queue.send(Work::Many(jobs)) {
            self.inner.unanswered.fetch_sub(n, Ordering::SeqCst);
            if let Work::Many(jobs) = e.into_inner() {
                for job in jobs {
                    job.reply.complete(Err(Error::Closed));
                }
            }
        }
        pending.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::kafka::config::KafkaConfig;
    use crate::transport::kafka::fake::{api, produce, produce_batch_codec, FakeBroker, Seen};
    use crate::transport::{Producer, Transport};
    use crate::KafkaTransport;

    /// The codec of every Produce's batch after one record through the
    /// producer `make` takes from a transport with `config`.
    fn codecs(
        make: impl FnOnce(&KafkaTransport) -> Arc<dyn Producer>,
        config: impl FnOnce(KafkaConfig) -> KafkaConfig,
    ) -> Vec<i16> {
        let broker =
            FakeBroker::start(|seen: &Seen, _| (seen.key == api::PRODUCE).then(|| produce(0, 0)));
        let config = config(KafkaConfig::new(broker.addr()).idempotence(false));
        let kafka = KafkaTransport::connect(config).unwrap();
        let record = OutRecord::new("t").partition(0).value("v");
        make(&kafka).send(record).unwrap();
        broker.produces(produce_batch_codec)
    }

    /// The engine's producer writes lz4 (codec 3) unless
    /// `engine_compression` says otherwise; other producers follow
    /// `compression`, which leaves the engine's alone.
    #[test]
    fn the_engine_producer_compresses_by_engine_compression() {
        let engine = |k: &KafkaTransport| k.engine_producer().unwrap();
        let plain = |k: &KafkaTransport| k.producer().unwrap();
        assert_eq!(codecs(engine, |c| c), [3]);
        assert_eq!(codecs(plain, |c| c), [0]);
        let none = |c: KafkaConfig| c.engine_compression(Compression::None);
        assert_eq!(codecs(engine, none), [0]);
        // Gzip is codec 1.
        let gzip = |c: KafkaConfig| c.compression(Compression::Gzip);
        assert_eq!(codecs(plain, gzip), [1]);
        assert_eq!(codecs(engine, gzip), [3]);
    }

    #[test]
    fn dropped_reply_answers_with_an_error() {
        let (pending, reply) = Pending::new();
        // The sender thread dying with the job in hand drops the completer.
        thread::spawn(move || drop(reply)).join().unwrap();
        assert!(matches!(pending.wait(), Err(Error::Thread(_))));
    }
}

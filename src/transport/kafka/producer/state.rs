//! What the front and the `kafka-retry-producer` thread share: the work
//! callers queue, the records the thread holds (per record, per chunk, per
//! request in flight, per connection), and the thread's state. The
//! thread's behaviour is in `sender`, `batching` and `retry`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ProduceRequest;

use super::idempotence::{Idempotence, Seq};
use crate::error::Result;
use crate::pending::Completer;
use crate::record::{OutRecord, Topic};
use crate::transport::kafka::client::Client;
use crate::transport::kafka::config::{Acks, Compression, KafkaConfig};
use crate::transport::kafka::conn::{Connection, Sent};

pub(super) struct Job {
    pub(super) record: OutRecord,
    /// Answers the caller (a `send` / `send_async` caller's `Pending`, or
    /// one result of a `send_batch`'s `PendingBatch`); dropped unanswered
    /// (the sender thread died) it answers with an error, so no caller
    /// waits forever.
    pub(super) reply: Completer,
    /// Whether it came with a whole `send_batch`, whose caller waits for
    /// all of it and adds nothing meanwhile.
    pub(super) batch: bool,
}

/// What callers queue for the sender thread.
pub(super) enum Work {
    One(Job),
    /// A `send_batch`: one message, so its records stay together.
    Many(Vec<Job>),
}

pub(super) struct Inner {
    pub(super) client: Arc<Client>,
    /// Round-robin position for keyless records.
    pub(super) next: AtomicU32,
    /// Records queued or held by the sender thread, not yet answered:
    /// raised by the caller before queueing, lowered by the sender thread
    /// before answering.
    pub(super) unanswered: AtomicUsize,
    /// The codec of every batch.
    pub(super) compression: Compression,
}

pub(super) type Tp = (String, i32);

/// What the sender thread keeps of a record besides the record itself.
pub(super) struct Meta {
    pub(super) reply: Completer,
    pub(super) partition: i32,
    /// [`estimate`] of the record.
    pub(super) size: usize,
    /// When the sender took it in; `delivery_timeout` counts from here.
    pub(super) arrived: Instant,
    /// Failed attempts so far (retriable errors).
    pub(super) failures: u32,
    /// Already resent once on a new connection after its connection broke,
    /// without counting a failure.
    pub(super) reconnected: bool,
    /// See [`Job::batch`].
    pub(super) batch: bool,
    /// Idempotent producer: the sequence of the batch it went in (kept
    /// through retries, with the batch's other records).
    pub(super) seq: Option<Seq>,
}

/// A record in the sender thread's hands.
pub(super) struct Item {
    pub(super) record: OutRecord,
    pub(super) meta: Meta,
}

/// A record waiting out a retry back-off, with when it is due.
pub(super) type Parked = (Instant, Item);

/// Records of one partition bound for one request. Records and their
/// metadata apart, so that the records can be encoded as one slice.
pub(super) struct Chunk {
    pub(super) tp: Tp,
    pub(super) records: Vec<OutRecord>,
    pub(super) metas: Vec<Meta>,
    pub(super) bytes: usize,
}

/// A Produce request written and not yet answered.
pub(super) struct Flight {
    pub(super) sent: Sent<ProduceRequest>,
    pub(super) chunks: Vec<Chunk>,
    /// Write order across all connections, to read the oldest reply first.
    pub(super) seq: u64,
}

/// The producer's own connection to one broker (not the client's pool: its
/// requests interleave with no one else's).
#[derive(Default)]
pub(super) struct Link {
    pub(super) conn: Option<Connection>,
    /// Oldest first; the connection answers them in this order.
    pub(super) flights: VecDeque<Flight>,
    /// When the last connection attempt failed: the next waits
    /// `retry_backoff` after it.
    pub(super) last_failure: Option<Instant>,
}

/// The sender thread's state.
pub(super) struct SenderState<'a> {
    pub(super) inner: &'a Inner,
    pub(super) config: &'a KafkaConfig,
    /// Records to write, oldest first (records due for a retry go in front).
    pub(super) backlog: VecDeque<Item>,
    /// Sum of the estimates in `backlog`.
    pub(super) backlog_bytes: usize,
    /// Records waiting out a retry back-off, with when they are due, in
    /// the order they failed.
    pub(super) waiting: Vec<Parked>,
    /// Partitions with records in `waiting`: topic -> partition -> count.
    pub(super) blocked: HashMap<String, HashMap<i32, usize>>,
    /// Topics whose metadata to refresh before their records are retried.
    pub(super) stale: HashSet<String>,
    /// Per leader node id.
    pub(super) links: HashMap<i32, Link>,
    /// Records held: in `backlog`, `waiting`, in flight or being handled.
    pub(super) held: usize,
    /// Next request's write order.
    pub(super) seq: u64,
    /// When the last reply was read: records that arrived before it had
    /// to wait anyway, so `linger` counts from here for them (callers just
    /// answered get their time to send again).
    pub(super) last_reply: Option<Instant>,
    /// Partition counts, kept for one step.
    pub(super) counts: HashMap<Topic, Result<i32>>,
    /// Whether callers may still queue records.
    pub(super) open: bool,
    /// The idempotent producer's state; `None` when it is off.
    pub(super) idem: Option<Idempotence>,
}

impl<'a> SenderState<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        let config = inner.client.config();
        SenderState {
            inner,
            config,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            waiting: Vec::new(),
            blocked: HashMap::new(),
            stale: HashSet::new(),
            links: HashMap::new(),
            held: 0,
            seq: 0,
            last_reply: None,
            counts: HashMap::new(),
            open: true,
            // As Java with `enable.idempotence` left at its default, acks=1
            // turns it off (the broker's dedup needs every replica).
            idem: (config.idempotence && config.acks == Acks::All).then(Idempotence::default),
        }
    }
}

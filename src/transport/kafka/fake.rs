//! A scripted fake broker on 127.0.0.1 for unit tests of the request paths:
//! it records every request's header and answers with hand-encoded replies
//! at the oldest versions we speak (non-flexible, so no tagged fields).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as the fake broker saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) key: i16,
    pub(crate) version: i16,
    pub(crate) client_id: Option<String>,
    /// The request body after the (non-flexible, v1) header.
    pub(crate) body: Vec<u8>,
    /// The whole request after its length: header, then body.
    pub(crate) frame: Vec<u8>,
}

/// API keys the tests script.
pub(crate) mod api {
    pub(crate) const METADATA: i16 = 3;
    pub(crate) const FIND_COORDINATOR: i16 = 10;
    pub(crate) const JOIN_GROUP: i16 = 11;
    pub(crate) const API_VERSIONS: i16 = 18;
    pub(crate) const FETCH: i16 = 1;
    pub(crate) const CREATE_TOPICS: i16 = 19;
    pub(crate) const PRODUCE: i16 = 0;
    pub(crate) const INIT_PRODUCER_ID: i16 = 22;
    pub(crate) const SYNC_GROUP: i16 = 14;
    pub(crate) const HEARTBEAT: i16 = 12;
    pub(crate) const LEAVE_GROUP: i16 = 13;
    pub(crate) const OFFSET_FETCH: i16 = 9;
    pub(crate) const OFFSET_COMMIT: i16 = 8;
}

/// The first group versions that carry `group_instance_id` (JoinGroup v5
/// names the protocol too), all non-flexible: for the static-membership
/// and cooperative fake coordinators.
pub(crate) const GROUP_V5_VERSIONS: &[(i16, i16)] = &[
    (api::API_VERSIONS, 0),
    (api::METADATA, 1),
    (api::FIND_COORDINATOR, 0),
    (api::JOIN_GROUP, 5),
    (api::SYNC_GROUP, 3),
    (api::HEARTBEAT, 3),
    (api::LEAVE_GROUP, 3),
    (api::OFFSET_FETCH, 1),
    (api::OFFSET_COMMIT, 7),
];

/// The one version offered per API (the oldest we speak).
const VERSIONS: &[(i16, i16)] = &[
    (api::API_VERSIONS, 0),
    (api::METADATA, 1),
    (api::CREATE_TOPICS, 2),
    (api::FIND_COORDINATOR, 0),
    (api::JOIN_GROUP, 0),
    (api::SYNC_GROUP, 0),
    (api::HEARTBEAT, 0),
    (api::LEAVE_GROUP, 0),
    (api::OFFSET_FETCH, 1),
    (api::OFFSET_COMMIT, 2),
    (api::FETCH, 4),
    (api::PRODUCE, 3),
    (api::INIT_PRODUCER_ID, 0),
];

/// Big-endian writer for reply bodies.
#[derive(Default)]
pub(crate) struct W(pub(crate) Vec<u8>);

impl W {
    pub(crate) fn i8(mut self, v: i8) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i16(mut self, v: i16) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i32(mut self, v: i32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i64(mut self, v: i64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn str(self, s: &str) -> W {
        let mut w = self.i16(s.len() as i16);
        w.0.extend_from_slice(s.as_bytes());
        w
    }
}

/// A fake broker; `reply(request, n)` answers the `n`th request (from 0)
/// with that API key with a body (after the correlation id), or `None` to
/// use the default answer: ApiVersions, Metadata naming this broker and
/// topic `t` (one partition), FindCoordinator naming this broker. Anything
/// else unscripted closes the connection.
pub(crate) struct FakeBroker {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Reply = dyn Fn(&Seen, usize) -> Option<Vec<u8>> + Send + Sync;

impl FakeBroker {
    pub(crate) fn start(
        reply: impl Fn(&Seen, usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_versions(VERSIONS, reply)
    }

    /// [`FakeBroker::start`] offering `versions` (one `(key, version)`
    /// each) in ApiVersions; keep them non-flexible.
    pub(crate) fn start_with_versions(
        versions: &'static [(i16, i16)],
        reply: impl Fn(&Seen, usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let reply: Arc<Reply> = Arc::new(reply);
        let (s, a) = (seen.clone(), addr.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (s, a, reply) = (s.clone(), a.clone(), reply.clone());
                thread::spawn(move || serve(conn, &a, &s, &*reply, versions));
            }
        });
        FakeBroker { addr, seen }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests seen so far, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// What `read` takes from each Produce seen so far, in order (e.g.
    /// [`produce_batch_ids`]); panics on one it cannot read.
    pub(crate) fn produces<T>(&self, read: impl Fn(&Seen) -> Option<T>) -> Vec<T> {
        self.seen()
            .iter()
            .filter(|s| s.key == api::PRODUCE)
            .map(|s| read(s).expect("a Produce v3 with one batch"))
            .collect()
    }

    /// Requests with API `key` seen so far.
    pub(crate) fn count(&self, key: i16) -> usize {
        self.seen().iter().filter(|s| s.key == key).count()
    }
}

fn serve(
    mut conn: TcpStream,
    addr: &str,
    seen: &Mutex<Vec<Seen>>,
    reply: &Reply,
    versions: &[(i16, i16)],
) {
    let port: i32 = addr.rsplit(':').next().unwrap().parse().unwrap();
    loop {
        let mut len = [0u8; 4];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        if conn.read_exact(&mut frame).is_err() {
            return;
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let corr = [frame[4], frame[5], frame[6], frame[7]];
        let id_len = i16::from_be_bytes([frame[8], frame[9]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let client_id = (id_len >= 0)
            .then(|| String::from_utf8_lossy(&frame[10..10 + id_len as usize]).into_owned());
        let body_at = 10 + id_len.max(0) as usize;
        let body = frame.get(body_at..).unwrap_or_default().to_vec();
        let request = Seen {
            key,
            version,
            client_id,
            body,
            frame: frame.clone(),
        };
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(request.clone());
            seen.iter().filter(|s| s.key == key).count() - 1
        };
        let body = match reply(&request, n) {
            Some(b) => b,
            None => match key {
                api::API_VERSIONS => api_versions(versions),
                api::METADATA => metadata(port),
                api::FIND_COORDINATOR => W::default().i16(0).i32(0).str("127.0.0.1").i32(port).0,
                _ => return,
            },
        };
        let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&corr);
        out.extend_from_slice(&body);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

/// ApiVersions v0-2 body (the client falls back to reading it as v0).
fn api_versions(versions: &[(i16, i16)]) -> Vec<u8> {
    let mut w = W::default().i16(0).i32(versions.len() as i32);
    for &(key, v) in versions {
        w = w.i16(key).i16(v).i16(v);
    }
    w.i32(0).0
}

/// Metadata v1: this broker as node 0 and controller; topic `t` with one
/// partition led by it.
fn metadata(port: i32) -> Vec<u8> {
    W::default()
        .i32(1)
        .i32(0)
        .str("127.0.0.1")
        .i32(port)
        .i16(-1) // rack: null
        .i32(0) // controller
        .i32(1)
        .i16(0)
        .str("t")
        .i8(0)
        .i32(1)
        .i16(0)
        .i32(0) // partition 0
        .i32(0) // leader
        .i32(1)
        .i32(0) // replicas
        .i32(1)
        .i32(0) // isr
        .0
}

/// CreateTopics v2 for topic `t`: `code`, no message.
pub(crate) fn create_topics(code: i16) -> Vec<u8> {
    W::default().i32(0).i32(1).str("t").i16(code).i16(-1).0
}

/// JoinGroup v0 failing with `code`, handing out `member_id`.
pub(crate) fn join_group_error(code: i16, member_id: &str) -> Vec<u8> {
    W::default()
        .i16(code)
        .i32(-1)
        .str("")
        .str("")
        .str(member_id)
        .i32(0)
        .0
}

/// OffsetFetch v1: partitions `0..partitions` of topic `t` committed at 5.
pub(crate) fn offset_fetch_at_5(partitions: i32) -> Vec<u8> {
    let mut w = W::default().i32(1).str("t").i32(partitions);
    for p in 0..partitions {
        w = w.i32(p).i32(0).i32(5).i16(-1).i16(0);
    }
    w.0
}

/// LeaveGroup v3 (member list): `member_id` left, no instance id.
pub(crate) fn leave_group_ok(member_id: &str) -> Vec<u8> {
    W::default()
        .i32(0)
        .i16(0)
        .i32(1)
        .str(member_id)
        .i16(-1)
        .i16(0)
        .0
}

/// InitProducerId v0: `code`, producer id and epoch.
pub(crate) fn init_producer_id(code: i16, producer_id: i64, epoch: i16) -> Vec<u8> {
    W::default().i32(0).i16(code).i64(producer_id).i16(epoch).0
}

/// Produce v3 for topic `t` partition 0: `code`, base offset.
pub(crate) fn produce(code: i16, base_offset: i64) -> Vec<u8> {
    W::default()
        .i32(1)
        .str("t")
        .i32(1)
        .i32(0)
        .i16(code)
        .i64(base_offset)
        .i64(-1) // log append time
        .i32(0) // throttle
        .0
}

/// The idempotence fields of a Produce v3 request's first batch:
/// (producer id, epoch, base sequence, record count).
pub(crate) fn produce_batch_ids(seen: &Seen) -> Option<(i64, i16, i32, i32)> {
    let (f, at) = (&seen.frame, first_batch_at(seen)?);
    let be16 = |at: usize| Some(i16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?));
    let be32 = |at: usize| Some(i32::from_be_bytes(f.get(at..at + 4)?.try_into().ok()?));
    let be64 = |at: usize| Some(i64::from_be_bytes(f.get(at..at + 8)?.try_into().ok()?));
    Some((
        be64(at + 43)?,
        be16(at + 51)?,
        be32(at + 53)?,
        be32(at + 57)?,
    ))
}

/// The codec id (attributes bits 0-2) of a Produce v3 request's first batch.
pub(crate) fn produce_batch_codec(seen: &Seen) -> Option<i16> {
    let (f, at) = (&seen.frame, first_batch_at(seen)? + 21);
    Some(i16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?) & 7)
}

/// Where a Produce v3 request's first record batch starts in its frame.
fn first_batch_at(seen: &Seen) -> Option<usize> {
    let f = &seen.frame;
    let be16 = |at: usize| Some(i16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?));
    // Header: key, version, correlation id, client id.
    let mut at = 8;
    at += 2 + usize::try_from(be16(at)?.max(0)).ok()?;
    // transactional_id (nullable), acks, timeout, topic count.
    at += 2 + usize::try_from(be16(at)?.max(0)).ok()?;
    at += 2 + 4 + 4;
    at += 2 + usize::try_from(be16(at)?).ok()?; // topic name
    at += 4 + 4 + 4; // partition count, index, records length
    Some(at)
}

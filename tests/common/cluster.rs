//! Tansu dressed up as a 3-broker cluster, for leader / coordinator
//! routing and failover tests.
//!
//! [`Cluster::start`] listens on three `127.0.0.1` ports, "nodes" 0, 1 and
//! 2, and forwards every request to one real broker (Tansu, one node). On
//! the way it decodes requests and replies with kafka-protocol and plays
//! the parts of a cluster that one broker cannot:
//!
//! * **Metadata** replies list the three ports as the brokers (minus killed
//!   ones) and give every partition a leader: partition `p` is led by node
//!   `p % 3` (the next live node if that one is dead) unless moved with
//!   [`Cluster::move_leader`].
//! * **FindCoordinator** replies name the coordinator node (0 unless moved
//!   with [`Cluster::move_coordinator`]).
//! * **Leadership is enforced** like a real broker would: a Produce, Fetch
//!   or ListOffsets partition sent to a node that does not lead it is
//!   answered `NOT_LEADER_OR_FOLLOWER` by the harness (and never reaches
//!   Tansu, so a refused Produce writes nothing); the partitions a node does
//!   lead are forwarded. Group requests (JoinGroup, SyncGroup, Heartbeat,
//!   LeaveGroup, OffsetCommit, OffsetFetch) to a node that is not the
//!   coordinator are answered `NOT_COORDINATOR`.
//! * [`Cluster::kill`] closes a node's port (new connections are refused,
//!   live ones closed) and moves its partitions and the coordinator to live
//!   nodes, as a controller would.
//!
//! Counters: requests per (node, API), partitions per (node, API, topic,
//! partition) for Produce and Fetch, refusals per (node, API), and when a
//! node first served a partition (for failover times).
//!
//! Each client connection is served by one thread with one upstream
//! connection, request by request in order (pipelined requests wait their
//! turn, replies keep their order).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, FindCoordinatorResponse, HeartbeatResponse,
    JoinGroupResponse, LeaveGroupResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// Number of "brokers".
pub const NODES: usize = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_COORDINATOR: i16 = 16;
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// A running cluster harness; dropping it closes every port and connection.
pub struct Cluster {
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    ports: Vec<u16>,
    stop: AtomicBool,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    /// Client sockets per node, for `kill`.
    live: Mutex<Vec<(usize, TcpStream)>>,
}

#[derive(Default)]
struct State {
    /// Leaders moved by hand: (topic, partition) -> node.
    moved: HashMap<(String, i32), usize>,
    /// Moves metadata does not show yet: (topic, partition) -> (the old
    /// leader metadata still names, until when).
    lagging: HashMap<(String, i32), (usize, Instant)>,
    coordinator: usize,
    dead: [bool; NODES],
}

#[derive(Default)]
struct Stats {
    requests: HashMap<(usize, i16), usize>,
    partitions: HashMap<(usize, i16, String, i32), usize>,
    refused: HashMap<(usize, i16), usize>,
    /// When each (node, api, topic, partition) was last forwarded for the
    /// first time since `reset_first_seen`.
    first_served: HashMap<(usize, i16, String, i32), Instant>,
    /// When each (node, api) served a group request for the first time.
    first_group: HashMap<(usize, i16), Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn live(&self, node: usize) -> usize {
        (0..NODES)
            .map(|i| (node + i) % NODES)
            .find(|n| !self.dead[*n])
            .unwrap_or(node)
    }

    fn leader(&self, topic: &str, partition: i32) -> usize {
        let want = self
            .moved
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(partition.rem_euclid(NODES as i32) as usize);
        self.live(want)
    }

    fn coordinator(&self) -> usize {
        self.live(self.coordinator)
    }

    /// The leader Metadata replies name: the old one while a move lags.
    fn metadata_leader(&self, topic: &str, partition: i32) -> usize {
        match self.lagging.get(&(topic.to_string(), partition)) {
            Some(&(old, until)) if Instant::now() < until && !self.dead[old] => old,
            _ => self.leader(topic, partition),
        }
    }
}

impl Cluster {
    /// Three ports forwarding to `upstream` (`host:port` of the one broker).
    pub fn start(upstream: &str) -> Cluster {
        let listeners: Vec<TcpListener> = (0..NODES)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a cluster port"))
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            ports,
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            stats: Mutex::new(Stats::default()),
            live: Mutex::new(Vec::new()),
        });
        let acceptors = listeners
            .into_iter()
            .enumerate()
            .map(|(node, l)| {
                l.set_nonblocking(true).unwrap();
                let s = shared.clone();
                thread::Builder::new()
                    .name(format!("cluster-accept-{node}"))
                    .spawn(move || accept_loop(node, l, s))
                    .unwrap()
            })
            .collect();
        Cluster { shared, acceptors }
    }

    /// `127.0.0.1:PORT` of `node`.
    pub fn addr(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.shared.ports[node])
    }

    /// Every node's address, comma-separated (a bootstrap list).
    pub fn bootstrap(&self) -> String {
        (0..NODES)
            .map(|n| self.addr(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node leading `topic`-`partition` now.
    pub fn leader(&self, topic: &str, partition: i32) -> usize {
        lock(&self.shared.state).leader(topic, partition)
    }

    /// The coordinator node now.
    pub fn coordinator(&self) -> usize {
        lock(&self.shared.state).coordinator()
    }

    /// Moves the leadership of `topic`-`partition` to `node`: from now on
    /// metadata says so and the old leader refuses it.
    pub fn move_leader(&self, topic: &str, partition: i32, node: usize) {
        lock(&self.shared.state)
            .moved
            .insert((topic.to_string(), partition), node);
    }

    /// Like [`Cluster::move_leader`], but Metadata replies keep naming the
    /// old leader for `lag` (a controller slow to propagate the change):
    /// meanwhile the old leader refuses and the new one is unknown.
    pub fn move_leader_lagging(&self, topic: &str, partition: i32, node: usize, lag: Duration) {
        let mut state = lock(&self.shared.state);
        let old = state.leader(topic, partition);
        state
            .lagging
            .insert((topic.to_string(), partition), (old, Instant::now() + lag));
        state.moved.insert((topic.to_string(), partition), node);
    }

    /// Moves the group coordinator (of every group) to `node`.
    pub fn move_coordinator(&self, node: usize) {
        lock(&self.shared.state).coordinator = node;
    }

    /// Kills `node`: its port refuses connections, its live connections
    /// close, it leaves the metadata, and its partitions and the
    /// coordinator move to the next live node. There is no way back.
    pub fn kill(&self, node: usize) {
        lock(&self.shared.state).dead[node] = true;
        let mut live = lock(&self.shared.live);
        live.retain(|(n, s)| {
            if *n == node {
                let _ = s.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Requests of `api` that `node` received.
    pub fn requests(&self, node: usize, api: ApiKey) -> usize {
        lock(&self.shared.stats)
            .requests
            .get(&(node, api as i16))
            .copied()
            .unwrap_or(0)
    }

    /// Times `node` was asked for `topic`-`partition` in a request of `api`
    /// (Produce, Fetch, ListOffsets), refused or not.
    pub fn partition_requests(
        &self,
        node: usize,
        api: ApiKey,
        topic: &str,
        partition: i32,
    ) -> usize {
        lock(&self.shared.stats)
            .partitions
            .get(&(node, api as i16, topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Every (node, partition) pair `api` requests went to for `topic`, with
    /// counts.
    pub fn routes(&self, api: ApiKey, topic: &str) -> Vec<(usize, i32, usize)> {
        let mut v: Vec<(usize, i32, usize)> = lock(&self.shared.stats)
            .partitions
            .iter()
            .filter(|((_, a, t, _), _)| *a == api as i16 && t == topic)
            .map(|((n, _, _, p), c)| (*n, *p, *c))
            .collect();
        v.sort();
        v
    }

    /// Partitions or group requests of `api` that `node` refused
    /// (NOT_LEADER_OR_FOLLOWER / NOT_COORDINATOR).
    pub fn refused(&self, node: usize, api: ApiKey) -> usize {
        lock(&self.shared.stats)
            .refused
            .get(&(node, api as i16))
            .copied()
            .unwrap_or(0)
    }

    /// When `node` first forwarded `topic`-`partition` in an `api` request
    /// (since start or [`Cluster::forget_first_served`]).
    pub fn first_served(
        &self,
        node: usize,
        api: ApiKey,
        topic: &str,
        partition: i32,
    ) -> Option<Instant> {
        lock(&self.shared.stats)
            .first_served
            .get(&(node, api as i16, topic.to_string(), partition))
            .copied()
    }

    /// When `node` first forwarded a group request of `api` (since start or
    /// [`Cluster::forget_first_served`]).
    pub fn first_group_request(&self, node: usize, api: ApiKey) -> Option<Instant> {
        lock(&self.shared.stats)
            .first_group
            .get(&(node, api as i16))
            .copied()
    }

    /// Forgets the "first served" times, e.g. right before a move.
    pub fn forget_first_served(&self) {
        let mut s = lock(&self.shared.stats);
        s.first_served.clear();
        s.first_group.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, s) in lock(&self.shared.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        for h in self.acceptors.drain(..) {
            let _ = h.join();
        }
    }
}

fn accept_loop(node: usize, listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        if lock(&shared.state).dead[node] {
            // Dropping the listener: connections are refused from now on.
            return;
        }
        match listener.accept() {
            Ok((client, _)) => {
                let s = shared.clone();
                let _ = thread::Builder::new()
                    .name(format!("cluster-{node}-conn"))
                    .spawn(move || {
                        let _ = serve(node, client, &s);
                    });
            }
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    let n = usize::try_from(n).map_err(|_| io::Error::other("negative frame length"))?;
    let mut frame = vec![0u8; n];
    s.read_exact(&mut frame)?;
    Ok(frame)
}

fn write_frame(s: &mut TcpStream, frame: &[u8]) -> io::Result<()> {
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    s.write_all(&out)
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// What the harness does with one request.
enum Plan {
    /// Forward the frame unchanged; pass the reply unchanged.
    Forward,
    /// Answer this frame without asking the broker.
    Answer(Vec<u8>),
    /// Forward this frame and rewrite the reply with this function.
    Rewrite(Vec<u8>, Box<dyn FnOnce(Bytes) -> io::Result<Vec<u8>>>),
}

fn serve(node: usize, mut client: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let _ = client.set_nodelay(true);
    lock(&shared.live).push((node, client.try_clone()?));
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    let _ = upstream.set_nodelay(true);
    let result = (|| loop {
        let frame = read_frame(&mut client)?;
        if lock(&shared.state).dead[node] || shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if frame.len() < 8 {
            return Err(bad("short request"));
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        *lock(&shared.stats).requests.entry((node, key)).or_default() += 1;
        let plan = match ApiKey::try_from(key) {
            Ok(api) => plan(node, api, version, &frame, shared)?,
            Err(_) => Plan::Forward,
        };
        let reply = match plan {
            Plan::Answer(r) => r,
            Plan::Forward => {
                write_frame(&mut upstream, &frame)?;
                read_frame(&mut upstream)?
            }
            Plan::Rewrite(req, f) => {
                write_frame(&mut upstream, &req)?;
                f(Bytes::from(read_frame(&mut upstream)?))?
            }
        };
        write_frame(&mut client, &reply)?;
    })();
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// Decodes a request frame: header and body.
fn decode_req<T: Decodable>(
    api: ApiKey,
    version: i16,
    frame: &[u8],
) -> io::Result<(RequestHeader, T)> {
    let mut b = Bytes::copy_from_slice(frame);
    let h = RequestHeader::decode(&mut b, api.request_header_version(version)).map_err(bad)?;
    let body = T::decode(&mut b, version).map_err(bad)?;
    Ok((h, body))
}

fn encode_req<T: Encodable>(
    api: ApiKey,
    version: i16,
    h: &RequestHeader,
    body: &T,
) -> io::Result<Vec<u8>> {
    let mut b = BytesMut::new();
    h.encode(&mut b, api.request_header_version(version))
        .map_err(bad)?;
    body.encode(&mut b, version).map_err(bad)?;
    Ok(b.to_vec())
}

/// A reply frame: header (correlation id) and body.
fn encode_resp<T: Encodable + HeaderVersion>(
    corr: i32,
    version: i16,
    body: &T,
) -> io::Result<Vec<u8>> {
    let mut b = BytesMut::new();
    let mut h = ResponseHeader::default();
    h.correlation_id = corr;
    h.encode(&mut b, T::header_version(version)).map_err(bad)?;
    body.encode(&mut b, version).map_err(bad)?;
    Ok(b.to_vec())
}

fn decode_resp<T: Decodable + HeaderVersion>(
    version: i16,
    mut frame: Bytes,
) -> io::Result<(ResponseHeader, T)> {
    let h = ResponseHeader::decode(&mut frame, T::header_version(version)).map_err(bad)?;
    Ok((h, T::decode(&mut frame, version).map_err(bad)?))
}

fn plan(
    node: usize,
    api: ApiKey,
    version: i16,
    frame: &[u8],
    shared: &Arc<Shared>,
) -> io::Result<Plan> {
    match api {
        ApiKey::Metadata => {
            let s = shared.clone();
            Ok(Plan::Rewrite(
                frame.to_vec(),
                Box::new(move |r| rewrite_metadata(version, r, &s)),
            ))
        }
        ApiKey::FindCoordinator => {
            let s = shared.clone();
            Ok(Plan::Rewrite(
                frame.to_vec(),
                Box::new(move |r| rewrite_coordinator(version, r, &s)),
            ))
        }
        ApiKey::Produce => plan_produce(node, version, frame, shared),
        ApiKey::Fetch => plan_fetch(node, version, frame, shared),
        ApiKey::ListOffsets => plan_list_offsets(node, version, frame, shared),
        ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch => plan_group(node, api, version, frame, shared),
        _ => Ok(Plan::Forward),
    }
}

fn broker_list(shared: &Shared) -> Vec<MetadataResponseBroker> {
    let state = lock(&shared.state);
    (0..NODES)
        .filter(|n| !state.dead[*n])
        .map(|n| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(n as i32);
            b.host = StrBytes::from_static_str("127.0.0.1");
            b.port = i32::from(shared.ports[n]);
            b
        })
        .collect()
}

fn rewrite_metadata(version: i16, reply: Bytes, shared: &Shared) -> io::Result<Vec<u8>> {
    let (h, mut m): (_, MetadataResponse) = decode_resp(version, reply)?;
    m.brokers = broker_list(shared);
    let state = lock(&shared.state);
    let live: Vec<BrokerId> = (0..NODES)
        .filter(|n| !state.dead[*n])
        .map(|n| BrokerId(n as i32))
        .collect();
    m.controller_id = BrokerId(state.live(0) as i32);
    for t in &mut m.topics {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
            continue;
        };
        for p in &mut t.partitions {
            if p.error_code == 0 {
                p.leader_id = BrokerId(state.metadata_leader(&name, p.partition_index) as i32);
                p.replica_nodes = live.clone();
                p.isr_nodes = live.clone();
            }
        }
    }
    drop(state);
    encode_resp(h.correlation_id, version, &m)
}

fn rewrite_coordinator(version: i16, reply: Bytes, shared: &Shared) -> io::Result<Vec<u8>> {
    let (h, mut r): (_, FindCoordinatorResponse) = decode_resp(version, reply)?;
    let node = lock(&shared.state).coordinator();
    let port = i32::from(shared.ports[node]);
    if version < 4 {
        if r.error_code == 0 {
            r.node_id = BrokerId(node as i32);
            r.host = StrBytes::from_static_str("127.0.0.1");
            r.port = port;
        }
    } else {
        for c in &mut r.coordinators {
            if c.error_code == 0 {
                c.node_id = BrokerId(node as i32);
                c.host = StrBytes::from_static_str("127.0.0.1");
                c.port = port;
            }
        }
    }
    encode_resp(h.correlation_id, version, &r)
}

/// Counts the partitions of a request and says which `node` leads.
fn sort_partitions(
    node: usize,
    api: ApiKey,
    parts: &[(String, i32)],
    shared: &Shared,
) -> Vec<bool> {
    let state = lock(&shared.state);
    let mut stats = lock(&shared.stats);
    parts
        .iter()
        .map(|(t, p)| {
            *stats
                .partitions
                .entry((node, api as i16, t.clone(), *p))
                .or_default() += 1;
            let mine = state.leader(t, *p) == node;
            if mine {
                stats
                    .first_served
                    .entry((node, api as i16, t.clone(), *p))
                    .or_insert_with(Instant::now);
            } else {
                *stats.refused.entry((node, api as i16)).or_default() += 1;
            }
            mine
        })
        .collect()
}

fn plan_produce(node: usize, version: i16, frame: &[u8], shared: &Arc<Shared>) -> io::Result<Plan> {
    let api = ApiKey::Produce;
    let (h, mut req): (_, ProduceRequest) = decode_req(api, version, frame)?;
    let parts: Vec<(String, i32)> = req
        .topic_data
        .iter()
        .flat_map(|t| {
            t.partition_data
                .iter()
                .map(|p| (t.name.0.to_string(), p.index))
        })
        .collect();
    let mine = sort_partitions(node, api, &parts, shared);
    if mine.iter().all(|m| *m) {
        return Ok(Plan::Forward);
    }
    let refused: Vec<(String, i32)> = parts
        .iter()
        .zip(&mine)
        .filter(|(_, m)| !**m)
        .map(|(p, _)| p.clone())
        .collect();
    let add_refused = move |resp: &mut ProduceResponse| {
        for (t, p) in &refused {
            let mut pr = PartitionProduceResponse::default();
            pr.index = *p;
            pr.error_code = NOT_LEADER_OR_FOLLOWER;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            match resp.responses.iter_mut().find(|r| &*r.name.0 == t.as_str()) {
                Some(tr) => tr.partition_responses.push(pr),
                None => {
                    let mut tr = TopicProduceResponse::default();
                    tr.name = kafka_protocol::messages::TopicName(StrBytes::from_string(t.clone()));
                    tr.partition_responses.push(pr);
                    resp.responses.push(tr);
                }
            }
        }
    };
    if mine.iter().all(|m| !*m) {
        let mut resp = ProduceResponse::default();
        add_refused(&mut resp);
        return Ok(Plan::Answer(encode_resp(h.correlation_id, version, &resp)?));
    }
    // Mixed: forward the partitions led here, refuse the others.
    let state = lock(&shared.state);
    for t in &mut req.topic_data {
        let name = t.name.0.to_string();
        t.partition_data
            .retain(|p| state.leader(&name, p.index) == node);
    }
    drop(state);
    req.topic_data.retain(|t| !t.partition_data.is_empty());
    let fwd = encode_req(api, version, &h, &req)?;
    Ok(Plan::Rewrite(
        fwd,
        Box::new(move |reply| {
            let (rh, mut resp): (_, ProduceResponse) = decode_resp(version, reply)?;
            add_refused(&mut resp);
            encode_resp(rh.correlation_id, version, &resp)
        }),
    ))
}

fn plan_fetch(node: usize, version: i16, frame: &[u8], shared: &Arc<Shared>) -> io::Result<Plan> {
    let api = ApiKey::Fetch;
    let (h, mut req): (_, FetchRequest) = decode_req(api, version, frame)?;
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition))
        })
        .collect();
    let mine = sort_partitions(node, api, &parts, shared);
    if mine.iter().all(|m| *m) {
        return Ok(Plan::Forward);
    }
    let refused: Vec<(String, i32)> = parts
        .iter()
        .zip(&mine)
        .filter(|(_, m)| !**m)
        .map(|(p, _)| p.clone())
        .collect();
    let add_refused = move |resp: &mut FetchResponse| {
        for (t, p) in &refused {
            let mut pd = PartitionData::default();
            pd.partition_index = *p;
            pd.error_code = NOT_LEADER_OR_FOLLOWER;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            match resp
                .responses
                .iter_mut()
                .find(|r| &*r.topic.0 == t.as_str())
            {
                Some(tr) => tr.partitions.push(pd),
                None => {
                    let mut tr = FetchableTopicResponse::default();
                    tr.topic =
                        kafka_protocol::messages::TopicName(StrBytes::from_string(t.clone()));
                    tr.partitions.push(pd);
                    resp.responses.push(tr);
                }
            }
        }
    };
    if mine.iter().all(|m| !*m) {
        let mut resp = FetchResponse::default();
        add_refused(&mut resp);
        return Ok(Plan::Answer(encode_resp(h.correlation_id, version, &resp)?));
    }
    let state = lock(&shared.state);
    for t in &mut req.topics {
        let name = t.topic.0.to_string();
        t.partitions
            .retain(|p| state.leader(&name, p.partition) == node);
    }
    drop(state);
    req.topics.retain(|t| !t.partitions.is_empty());
    // Do not long-poll on the partitions led here while the others wait
    // for their refusal.
    // (1 ms, not 0: Tansu answers max_wait_ms = 0 with no partitions.)
    req.max_wait_ms = req.max_wait_ms.min(1);
    let fwd = encode_req(api, version, &h, &req)?;
    Ok(Plan::Rewrite(
        fwd,
        Box::new(move |reply| {
            let (rh, mut resp): (_, FetchResponse) = decode_resp(version, reply)?;
            add_refused(&mut resp);
            encode_resp(rh.correlation_id, version, &resp)
        }),
    ))
}

fn plan_list_offsets(
    node: usize,
    version: i16,
    frame: &[u8],
    shared: &Arc<Shared>,
) -> io::Result<Plan> {
    let api = ApiKey::ListOffsets;
    let (h, req): (_, ListOffsetsRequest) = decode_req(api, version, frame)?;
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mine = sort_partitions(node, api, &parts, shared);
    if mine.iter().all(|m| *m) {
        return Ok(Plan::Forward);
    }
    // Rare (offset resets): refuse the whole request; the client asks the
    // right leaders again after a metadata refresh.
    let mut resp = ListOffsetsResponse::default();
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_code = NOT_LEADER_OR_FOLLOWER;
            pr.offset = -1;
            pr.timestamp = -1;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Ok(Plan::Answer(encode_resp(h.correlation_id, version, &resp)?))
}

fn plan_group(
    node: usize,
    api: ApiKey,
    version: i16,
    frame: &[u8],
    shared: &Arc<Shared>,
) -> io::Result<Plan> {
    if lock(&shared.state).coordinator() == node {
        lock(&shared.stats)
            .first_group
            .entry((node, api as i16))
            .or_insert_with(Instant::now);
        return Ok(Plan::Forward);
    }
    *lock(&shared.stats)
        .refused
        .entry((node, api as i16))
        .or_default() += 1;
    let corr = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let reply = match api {
        ApiKey::JoinGroup => {
            let mut r = JoinGroupResponse::default();
            r.error_code = NOT_COORDINATOR;
            r.generation_id = -1;
            encode_resp(corr, version, &r)?
        }
        ApiKey::SyncGroup => {
            let mut r = SyncGroupResponse::default();
            r.error_code = NOT_COORDINATOR;
            encode_resp(corr, version, &r)?
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatResponse::default();
            r.error_code = NOT_COORDINATOR;
            encode_resp(corr, version, &r)?
        }
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupResponse::default();
            r.error_code = NOT_COORDINATOR;
            encode_resp(corr, version, &r)?
        }
        ApiKey::OffsetCommit => {
            let (_, req): (_, OffsetCommitRequest) = decode_req(api, version, frame)?;
            let mut r = OffsetCommitResponse::default();
            for t in &req.topics {
                let mut tr = OffsetCommitResponseTopic::default();
                tr.name = t.name.clone();
                for p in &t.partitions {
                    let mut pr = OffsetCommitResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = NOT_COORDINATOR;
                    tr.partitions.push(pr);
                }
                r.topics.push(tr);
            }
            encode_resp(corr, version, &r)?
        }
        ApiKey::OffsetFetch => {
            let (_, req): (_, OffsetFetchRequest) = decode_req(api, version, frame)?;
            let mut r = OffsetFetchResponse::default();
            if version >= 8 {
                for g in &req.groups {
                    let mut gr = OffsetFetchResponseGroup::default();
                    gr.group_id = g.group_id.clone();
                    gr.error_code = NOT_COORDINATOR;
                    r.groups.push(gr);
                }
            } else {
                if version >= 2 {
                    r.error_code = NOT_COORDINATOR;
                }
                for t in req.topics.iter().flatten() {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = t.name.clone();
                    for p in &t.partition_indexes {
                        let mut pr = OffsetFetchResponsePartition::default();
                        pr.partition_index = *p;
                        pr.committed_offset = -1;
                        pr.error_code = NOT_COORDINATOR;
                        tr.partitions.push(pr);
                    }
                    r.topics.push(tr);
                }
            }
            encode_resp(corr, version, &r)?
        }
        _ => return Ok(Plan::Forward),
    };
    Ok(Plan::Answer(reply))
}

//! The shared client: bootstrap, cluster metadata (brokers, partition
//! leaders), a pool of one connection per broker for short requests, and
//! topic admin.
//!
//! Locking: `meta` and `pool` are held only for map look-ups, never across
//! network I/O. A pooled connection's own mutex is held for a whole request,
//! which serializes requests per broker (the broker answers them in order
//! anyway). Metadata and admin requests use their own connection (`admin`),
//! so a caller holding a pooled connection may refresh metadata.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::config::KafkaConfig;
use super::conn::Connection;
use super::errors::check;
use super::retry::{classify, Action, Backoff, Retry};
use crate::error::{Error, KafkaCode, Result};

const UNKNOWN_TOPIC: i16 = KafkaCode::UNKNOWN_TOPIC_OR_PARTITION.code();
const LEADER_NOT_AVAILABLE: i16 = KafkaCode::LEADER_NOT_AVAILABLE.code();
const TOPIC_ALREADY_EXISTS: i16 = KafkaCode::TOPIC_ALREADY_EXISTS.code();

/// What one Metadata reply says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopicState {
    /// The topic does not exist (UNKNOWN_TOPIC_OR_PARTITION).
    Missing,
    /// Leader node id per partition index; -1 = no leader right now.
    Leaders(Vec<i32>),
    /// Any other topic-level error code.
    Failed(i16),
}

#[derive(Default)]
struct Meta {
    /// node id -> "host:port".
    brokers: HashMap<i32, String>,
    /// topic -> leader per partition (-1 unknown). Only existing topics.
    topics: HashMap<String, Vec<i32>>,
}

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    /// When the last connection attempt failed or the connection broke:
    /// reconnects wait `retry_backoff` after it.
    last_failure: Option<Instant>,
}

/// A Kafka cluster client, shared as `Arc<Client>` by producers and consumers.
pub(crate) struct Client {
    config: KafkaConfig,
    meta: Mutex<Meta>,
    pool: Mutex<HashMap<i32, Arc<Mutex<Slot>>>>,
    /// Connection for Metadata and CreateTopics, to any broker.
    admin: Mutex<Slot>,
    /// Versions negotiated with the bootstrap broker, for diagnostics.
    versions: Vec<(ApiKey, Option<i16>)>,
    bootstrap_addr: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.config.bootstrap)
            .field("connected_to", &self.bootstrap_addr)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: every value guarded here stays
/// consistent across a panic (maps and an optional connection).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tries each address in order; the error names every address and its cause.
fn connect_first(addrs: &[String], config: &KafkaConfig) -> Result<Connection> {
    let mut failures: Vec<Error> = Vec::new();
    for addr in addrs {
        match Connection::connect(addr, config) {
            Ok(c) => return Ok(c),
            // Refused credentials: the other brokers of the cluster would
            // refuse them too, and the error must stay `Error::Auth` (not
            // retriable), not become one more I/O cause in the list below.
            Err(e @ Error::Auth { .. }) => return Err(e),
            Err(e) => {
                log::debug!("kafka: {e}");
                failures.push(e);
            }
        }
    }
    let last = match failures.pop() {
        Some(e) => e,
        None => return Err(Error::Protocol("no broker address to connect to".into())),
    };
    if failures.is_empty() {
        return Err(last);
    }
    // Several addresses: keep the last cause as the source and list the others.
    // A failure retrying cannot fix (a refused TLS certificate, bad
    // settings) is returned as it is, not turned into a retriable I/O error.
    if let Some(fatal) = failures
        .iter()
        .chain(std::iter::once(&last))
        .find(|e| matches!(e, Error::Tls { .. } | Error::Config { .. }))
    {
        return Err(fatal.clone());
    }
    let earlier: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    let (context, source) = match last {
        Error::Io { context, source } => (context, source),
        other => (
            "connect (last broker)".to_string(),
            Arc::new(io::Error::other(other.to_string())),
        ),
    };
    Err(Error::Io {
        context: format!("{}; {context}", earlier.join("; ")),
        source,
    })
}

pub(crate) fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

impl Client {
    /// Connects to the first reachable bootstrap broker, negotiates versions
    /// and reads the broker list.
    pub(crate) fn bootstrap(config: KafkaConfig) -> Result<Arc<Client>> {
        config.validate()?;
        let conn = connect_first(&config.bootstrap, &config)?;
        let versions = conn.negotiated_versions();
        let bootstrap_addr = conn.addr().to_string();
        let client = Arc::new(Client {
            config,
            meta: Mutex::new(Meta::default()),
            pool: Mutex::new(HashMap::new()),
            admin: Mutex::new(Slot {
                conn: Some(conn),
                last_failure: None,
            }),
            versions,
            bootstrap_addr,
        });
        client.refresh_metadata(&[])?;
        Ok(client)
    }

    /// The settings.
    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Versions negotiated with the bootstrap broker (`None`: unsupported).
    pub(crate) fn api_versions(&self) -> &[(ApiKey, Option<i16>)] {
        &self.versions
    }

    /// A new dedicated connection to a node id from metadata (for
    /// coordinator, heartbeat and fetch connections: a long-poll Fetch or a
    /// parked JoinGroup blocks its connection).
    pub(crate) fn connect_node(&self, node_id: i32) -> Result<Connection> {
        let addr = match self.broker_addr(node_id) {
            Some(a) => a,
            None => {
                self.refresh_metadata(&[])?;
                // Retriable, with a metadata refresh (LEADER_NOT_AVAILABLE):
                // a broker that left the cluster took its leaderships with
                // it, and the caller's next attempt finds the new leader. A
                // Protocol error here made a produce to a partition of a
                // dead broker fail at once (tests/kafka_cluster.rs).
                self.broker_addr(node_id).ok_or_else(|| {
                    Error::kafka(
                        format!("broker {node_id} is not in the cluster metadata"),
                        LEADER_NOT_AVAILABLE,
                    )
                })?
            }
        };
        Connection::connect(&addr, &self.config)
    }

    fn broker_addr(&self, node_id: i32) -> Option<String> {
        lock(&self.meta).brokers.get(&node_id).cloned()
    }

    /// A new dedicated connection to any live broker: known brokers first,
    /// then the bootstrap list.
    pub(crate) fn connect_any(&self) -> Result<Connection> {
        let mut addrs: Vec<String> = {
            let meta = lock(&self.meta);
            let mut ids: Vec<&i32> = meta.brokers.keys().collect();
            ids.sort();
            ids.iter().map(|id| meta.brokers[*id].clone()).collect()
        };
        for b in &self.config.bootstrap {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        connect_first(&addrs, &self.config)
    }

    /// Leader node id of a partition (metadata cache, refreshed on a miss).
    pub(crate) fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        if let Some(l) = self.cached_leader(topic, partition) {
            return Ok(l);
        }
        let state = self.fetch_metadata(&[topic.to_string()])?;
        match state.get(topic) {
            None | Some(TopicState::Missing) => Err(Error::UnknownTopic(topic.to_string())),
            Some(TopicState::Failed(code)) => Err(Error::kafka(format!("Metadata {topic}"), *code)),
            Some(TopicState::Leaders(leaders)) => {
                let ctx = format!("Metadata {topic}-{partition}");
                match usize::try_from(partition).ok().and_then(|p| leaders.get(p)) {
                    None => Err(Error::kafka(ctx, UNKNOWN_TOPIC)),
                    Some(&l) if l < 0 => Err(Error::kafka(ctx, LEADER_NOT_AVAILABLE)),
                    Some(&l) => Ok(l),
                }
            }
        }
    }

    fn cached_leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let meta = lock(&self.meta);
        let leaders = meta.topics.get(topic)?;
        let l = *leaders.get(usize::try_from(partition).ok()?)?;
        (l >= 0).then_some(l)
    }

    /// Partition count from the cache, reading metadata on a miss.
    pub(crate) fn cached_partition_count(&self, topic: &str) -> Result<Option<i32>> {
        let cached = lock(&self.meta).topics.get(topic).map(|l| l.len() as i32);
        match cached {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => self.partition_count(topic),
        }
    }

    /// Partition count, `None` if the topic does not exist (always reads
    /// metadata for it). A topic still being created (no partitions or
    /// LEADER_NOT_AVAILABLE) is retried, sharing one budget with dropped
    /// connections.
    pub(crate) fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        let ctx = || format!("Metadata {topic}");
        Retry::new(&self.config).run(
            "Metadata",
            &mut (),
            |_| {
                let state = self.fetch_metadata_once(&[topic.to_string()])?;
                match state.get(topic) {
                    None | Some(TopicState::Missing) => Ok(None),
                    Some(TopicState::Leaders(l)) if !l.is_empty() => Ok(Some(l.len() as i32)),
                    Some(TopicState::Leaders(_)) => {
                        Err(Error::kafka(ctx(), KafkaCode::LEADER_NOT_AVAILABLE))
                    }
                    Some(TopicState::Failed(code)) => Err(Error::kafka(ctx(), *code)),
                }
            },
            |_, e| classify(e),
        )
    }

    /// Re-reads metadata for these topics (and the broker list); call after
    /// NOT_LEADER / UNKNOWN_TOPIC errors. An empty list reads brokers only.
    pub(crate) fn refresh_metadata(&self, topics: &[String]) -> Result<()> {
        self.fetch_metadata(topics).map(|_| ())
    }

    /// Metadata for these topics (retried per [`classify`]); updates the
    /// cache and returns what the reply says about each requested topic.
    pub(crate) fn fetch_metadata(&self, topics: &[String]) -> Result<HashMap<String, TopicState>> {
        Retry::new(&self.config).run(
            "Metadata",
            &mut (),
            |_| self.fetch_metadata_once(topics),
            |_, e| classify(e),
        )
    }

    /// One Metadata request, no retries, for callers that run their own
    /// [`Retry`] (no retries nested in retries).
    pub(crate) fn fetch_metadata_once(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, TopicState>> {
        let timeout = self.config.request_timeout;
        let resp = self.admin_call(|c| {
            let v = c.version(ApiKey::Metadata)?;
            let mut req = MetadataRequest::default();
            req.topics = Some(
                topics
                    .iter()
                    .map(|t| {
                        let mut mt = MetadataRequestTopic::default();
                        mt.name = Some(topic_name(t));
                        mt
                    })
                    .collect(),
            );
            // v1-3 lack the flag (the encoder refuses a non-default value there).
            if v >= 4 {
                req.allow_auto_topic_creation = false;
            }
            c.call(v, &req, timeout)
        })?;
        check("Metadata", resp.error_code)?;
        let mut states = HashMap::new();
        let mut meta = lock(&self.meta);
        if !resp.brokers.is_empty() {
            meta.brokers = resp
                .brokers
                .iter()
                .map(|b| (b.node_id.0, format!("{}:{}", &*b.host, b.port)))
                .collect();
            // Leaders on brokers that left are unknown now, also for topics
            // this reply does not cover (a brokers-only refresh): the next
            // `leader` look-up reads metadata instead of naming a dead node.
            let Meta { brokers, topics } = &mut *meta;
            for leaders in topics.values_mut() {
                for l in leaders.iter_mut() {
                    if *l >= 0 && !brokers.contains_key(l) {
                        *l = -1;
                    }
                }
            }
        }
        for t in &resp.topics {
            // v10+ also carry topic ids; we address topics by name only.
            let name = match &t.name {
                Some(n) => n.0.to_string(),
                None => continue,
            };
            let state = match t.error_code {
                0 | LEADER_NOT_AVAILABLE => {
                    // Sized by the number of partitions listed, never by an
                    // index from the wire: a forged index (i32::MAX) must not
                    // overflow or allocate gigabytes. Kafka lists every
                    // partition, so indexes are 0..len.
                    let mut leaders = vec![-1; t.partitions.len()];
                    for p in &t.partitions {
                        let slot = usize::try_from(p.partition_index)
                            .ok()
                            .and_then(|i| leaders.get_mut(i));
                        match slot {
                            Some(l) => {
                                *l = if p.error_code == 0 || p.leader_id.0 >= 0 {
                                    p.leader_id.0
                                } else {
                                    -1
                                };
                            }
                            None => log::warn!(
                                "metadata for {name}: partition index {} outside 0..{}; ignored",
                                p.partition_index,
                                t.partitions.len()
                            ),
                        }
                    }
                    TopicState::Leaders(leaders)
                }
                UNKNOWN_TOPIC => TopicState::Missing,
                code => TopicState::Failed(code),
            };
            match &state {
                TopicState::Leaders(l) if !l.is_empty() => {
                    meta.topics.insert(name.clone(), l.clone());
                }
                TopicState::Missing => {
                    meta.topics.remove(&name);
                }
                _ => {}
            }
            states.insert(name, state);
        }
        Ok(states)
    }

    /// Runs `f` once on the admin connection (any broker), connecting
    /// first if there is none; a connection `f` broke is dropped, so the
    /// next call (a retry) connects again. `f` must not call back into
    /// `admin_call` (it would deadlock).
    pub(super) fn admin_call<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut slot = lock(&self.admin);
        let result = self.ensure_admin_conn(&mut slot).and_then(f);
        if slot.conn.as_ref().is_some_and(|c| c.is_broken()) {
            slot.conn = None;
            slot.last_failure = Some(Instant::now());
        }
        result
    }

    fn ensure_admin_conn<'a>(&self, slot: &'a mut Slot) -> Result<&'a mut Connection> {
        if slot.conn.is_none() {
            self.wait_backoff(slot.last_failure);
            match self.connect_any() {
                Ok(c) => slot.conn = Some(c),
                Err(e) => {
                    slot.last_failure = Some(Instant::now());
                    return Err(e);
                }
            }
        }
        slot.conn
            .as_mut()
            .ok_or_else(|| Error::Protocol("admin connection missing".into()))
    }

    fn wait_backoff(&self, last_failure: Option<Instant>) {
        if let Some(t) = last_failure {
            let wait = self.config.retry_backoff.saturating_sub(t.elapsed());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
        }
    }

    /// Runs `f` on the pooled connection to `node_id` (for short requests:
    /// produce, list offsets). A broken or stale connection is replaced
    /// (after `retry_backoff`); if `f` fails because the connection dropped,
    /// it runs once more on a new one (an idle pooled connection may have
    /// been closed by the broker, `connections.max.idle.ms`). Other errors
    /// are the caller's. `f` must not call `with_node` itself.
    pub(crate) fn with_node<T>(
        &self,
        node_id: i32,
        mut f: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let slot = {
            let mut pool = lock(&self.pool);
            pool.entry(node_id).or_default().clone()
        };
        let mut slot = lock(&slot);
        Retry::new(&self.config).retries(1).run(
            "pooled request",
            &mut *slot,
            |slot| {
                if slot.conn.is_none() {
                    self.wait_backoff(slot.last_failure);
                    match self.connect_node(node_id) {
                        Ok(c) => slot.conn = Some(c),
                        Err(e) => {
                            slot.last_failure = Some(Instant::now());
                            return Err(e);
                        }
                    }
                }
                match slot.conn.as_mut() {
                    Some(conn) => f(conn),
                    None => Err(Error::Protocol("pooled connection missing".into())),
                }
            },
            |slot, e| {
                let broke = slot.conn.as_ref().is_some_and(|c| c.is_broken());
                if broke {
                    slot.conn = None;
                    slot.last_failure = Some(Instant::now());
                }
                if broke && matches!(e, Error::Io { .. }) {
                    // The retry reconnects at once (see Retry::pause).
                    slot.last_failure = None;
                    Action::Reconnect
                } else {
                    Action::Fail
                }
            },
        )
    }

    /// Creates a topic (CreateTopics to any broker; TOPIC_ALREADY_EXISTS is
    /// success) and waits until metadata shows it with leaders, so the next
    /// produce finds it. `replication_factor` `None` is the broker's
    /// `default.replication.factor`.
    pub(crate) fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: Option<i16>,
    ) -> Result<()> {
        if partitions < 1 {
            return Err(Error::config(
                "topic_partitions",
                format!("{partitions} for topic {topic} is not at least 1"),
            ));
        }
        if let Some(rf) = replication_factor.filter(|&rf| rf < 1) {
            return Err(Error::config(
                "replication_factor",
                format!("{rf} for topic {topic} is not at least 1"),
            ));
        }
        // -1 is CreateTopics' "broker default" (v4+).
        let rf = replication_factor.unwrap_or(-1);
        Retry::new(&self.config).run(
            "CreateTopics",
            &mut (),
            |_| self.create_topic_once(topic, partitions, rf),
            |_, e| {
                let action = classify(e);
                if matches!(action, Action::Retry | Action::Rediscover) {
                    // NOT_CONTROLLER (41) and friends: new metadata, try again.
                    let _ = self.fetch_metadata_once(&[]);
                }
                action
            },
        )?;
        self.wait_for_topic(topic)
    }

    /// One CreateTopics request; TOPIC_ALREADY_EXISTS is success.
    fn create_topic_once(&self, topic: &str, partitions: i32, rf: i16) -> Result<()> {
        let timeout = self.config.request_timeout;
        let ctx = format!("CreateTopics {topic}");
        let resp = self.admin_call(|c| {
            let v = c.version(ApiKey::CreateTopics)?;
            if v < 4 && rf < 0 {
                // v2-3 have no "broker default" (-1).
                return Err(Error::config(
                    "replication_factor",
                    format!(
                        "broker {} speaks CreateTopics v{v}, which needs an explicit replication factor",
                        c.addr()
                    ),
                ));
            }
            let mut t = CreatableTopic::default();
            t.name = topic_name(topic);
            t.num_partitions = partitions;
            t.replication_factor = rf;
            let mut req = CreateTopicsRequest::default();
            req.topics = vec![t];
            req.timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            c.call(v, &req, timeout)
        })?;
        let result = resp
            .topics
            .iter()
            .find(|t| &*t.name.0 == topic)
            .ok_or_else(|| Error::Protocol(format!("{ctx}: topic missing from the reply")))?;
        match result.error_code {
            0 | TOPIC_ALREADY_EXISTS => Ok(()),
            code => {
                let ctx = match &result.error_message {
                    Some(m) if !m.is_empty() => format!("{ctx} ({})", &**m),
                    _ => ctx,
                };
                Err(Error::kafka(ctx, code))
            }
        }
    }

    /// Waits (bounded by `request_timeout`) until metadata shows `topic` with
    /// a leader for every partition.
    fn wait_for_topic(&self, topic: &str) -> Result<()> {
        let timeout = self.config.request_timeout;
        let poll = self.config.retry_backoff.min(Duration::from_millis(50));
        // The last answer about the topic when it was not ready yet.
        let mut last: Option<Option<TopicState>> = None;
        Retry::new(&self.config)
            .retries(u32::MAX)
            .backoff(Backoff::between(poll, poll))
            .deadline(Instant::now() + timeout)
            .run(
                "wait for a new topic",
                &mut last,
                |last| {
                    *last = None;
                    let state = self.fetch_metadata_once(&[topic.to_string()])?;
                    let found = state.get(topic).cloned();
                    if let Some(TopicState::Leaders(l)) = &found {
                        if !l.is_empty() && l.iter().all(|&x| x >= 0) {
                            return Ok(());
                        }
                    }
                    *last = Some(found);
                    Err(Error::kafka(
                        format!("Metadata {topic}"),
                        KafkaCode::LEADER_NOT_AVAILABLE,
                    ))
                },
                |_, e| classify(e),
            )
            .map_err(|e| match last {
                Some(last) => Error::Timeout(format!(
                    "topic {topic} created but not visible in metadata after {timeout:?} \
                     (last: {last:?})"
                )),
                None => e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{api, create_topics, FakeBroker, W};
    use super::*;

    fn client(broker: &FakeBroker) -> Arc<Client> {
        let config = KafkaConfig::new(broker.addr())
            .retry_backoff(Duration::from_millis(5))
            .max_retries(5);
        Client::bootstrap(config).unwrap()
    }

    /// Metadata v1: brokers `nodes` (all at `port`), and topic `t` with
    /// one partition led by `leader` (no topic for `None`).
    fn metadata(port: i32, nodes: &[i32], leader: Option<i32>) -> Vec<u8> {
        let mut w = W::default().i32(nodes.len() as i32);
        for &n in nodes {
            w = w.i32(n).str("127.0.0.1").i32(port).i16(-1);
        }
        let w = w.i32(nodes[0]); // controller
        let Some(leader) = leader else {
            return w.i32(0).0;
        };
        w.i32(1)
            .i16(0)
            .str("t")
            .i8(0)
            .i32(1)
            .i16(0)
            .i32(0)
            .i32(leader)
            .i32(1)
            .i32(leader)
            .i32(1)
            .i32(leader)
            .0
    }

    #[test]
    fn leaders_on_brokers_that_left_are_forgotten() {
        let port = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let p = port.clone();
        // Bootstrap: nodes 0 and 1, `t`-0 led by 1. Then node 1 is gone
        // (a brokers-only refresh), then `t`-0 is led by 0.
        let broker = FakeBroker::start(move |r, n| {
            let port = p.load(std::sync::atomic::Ordering::SeqCst);
            (r.key == api::METADATA).then(|| match n {
                0 => metadata(port, &[0, 1], Some(1)),
                1 => metadata(port, &[0], None),
                _ => metadata(port, &[0], Some(0)),
            })
        });
        let addr_port: i32 = broker.addr().rsplit(':').next().unwrap().parse().unwrap();
        port.store(addr_port, std::sync::atomic::Ordering::SeqCst);
        let c = client(&broker);
        assert_eq!(c.leader("t", 0).unwrap(), 1);
        c.refresh_metadata(&[]).unwrap();
        // Not "node 1" from the cache: metadata is read again.
        assert_eq!(c.leader("t", 0).unwrap(), 0);
        // A node metadata does not list is retriable with a refresh.
        let err = c.connect_node(1).unwrap_err();
        assert_eq!(
            err.kafka_code(),
            Some(KafkaCode::LEADER_NOT_AVAILABLE),
            "{err}"
        );
        assert_eq!(classify(&err), Action::Rediscover);
    }

    #[test]
    fn a_retriable_code_is_retried_and_a_fatal_one_fails_at_once() {
        // NOT_CONTROLLER twice, then created.
        let broker = FakeBroker::start(|r, n| {
            (r.key == api::CREATE_TOPICS).then(|| create_topics(if n < 2 { 41 } else { 0 }))
        });
        client(&broker).create_topic("t", 1, Some(1)).unwrap();
        assert_eq!(broker.count(api::CREATE_TOPICS), 3);

        // INVALID_PARTITIONS: no retry.
        let broker =
            FakeBroker::start(|r, _| (r.key == api::CREATE_TOPICS).then(|| create_topics(37)));
        let err = client(&broker).create_topic("t", 1, Some(1)).unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::new(37)), "{err}");
        assert!(err.to_string().contains("INVALID_PARTITIONS"), "{err}");
        assert_eq!(broker.count(api::CREATE_TOPICS), 1);

        // The budget is max_retries: 1 + 5 attempts, then the last error.
        let broker =
            FakeBroker::start(|r, _| (r.key == api::CREATE_TOPICS).then(|| create_topics(41)));
        let err = client(&broker).create_topic("t", 1, Some(1)).unwrap_err();
        assert_eq!(err.kafka_code(), Some(KafkaCode::NOT_CONTROLLER), "{err}");
        assert_eq!(broker.count(api::CREATE_TOPICS), 6);
    }
}

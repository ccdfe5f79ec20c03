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
use super::errors::{check, code_name};
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
                self.broker_addr(node_id).ok_or_else(|| {
                    Error::Protocol(format!("broker {node_id} is not in the cluster metadata"))
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
    /// LEADER_NOT_AVAILABLE) is retried up to `max_retries`.
    pub(crate) fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        let mut attempt = 0;
        loop {
            let state = self.fetch_metadata(&[topic.to_string()])?;
            let last = match state.get(topic) {
                None | Some(TopicState::Missing) => return Ok(None),
                Some(TopicState::Leaders(l)) if !l.is_empty() => return Ok(Some(l.len() as i32)),
                Some(TopicState::Leaders(_)) => {
                    Error::kafka(format!("Metadata {topic}"), LEADER_NOT_AVAILABLE)
                }
                Some(TopicState::Failed(code)) if KafkaCode::from(*code).is_retriable() => {
                    Error::kafka(format!("Metadata {topic}"), *code)
                }
                Some(TopicState::Failed(code)) => {
                    return Err(Error::kafka(format!("Metadata {topic}"), *code))
                }
            };
            attempt += 1;
            if attempt > self.config.max_retries {
                return Err(last);
            }
            thread::sleep(self.config.retry_backoff);
        }
    }

    /// Re-reads metadata for these topics (and the broker list); call after
    /// NOT_LEADER / UNKNOWN_TOPIC errors. An empty list reads brokers only.
    pub(crate) fn refresh_metadata(&self, topics: &[String]) -> Result<()> {
        self.fetch_metadata(topics).map(|_| ())
    }

    /// One Metadata request (retried on connection errors); updates the cache
    /// and returns what it says about each requested topic.
    pub(crate) fn fetch_metadata(&self, topics: &[String]) -> Result<HashMap<String, TopicState>> {
        self.metadata_with_retries(topics, self.config.max_retries)
    }

    /// [`Client::fetch_metadata`] with a single attempt, for callers that
    /// run their own bounded retry loop (no retries nested in retries).
    pub(crate) fn fetch_metadata_once(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, TopicState>> {
        self.metadata_with_retries(topics, 0)
    }

    fn metadata_with_retries(
        &self,
        topics: &[String],
        retries: u32,
    ) -> Result<HashMap<String, TopicState>> {
        let timeout = self.config.request_timeout;
        let resp = self.with_admin(retries, |c| {
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

    /// Runs `f` on the admin connection (any broker), reconnecting with
    /// backoff and retrying on connection errors up to `retries` times.
    /// `f` must not call back into `with_admin` (it would deadlock).
    fn with_admin<T>(
        &self,
        retries: u32,
        mut f: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let mut slot = lock(&self.admin);
        let mut attempt = 0;
        loop {
            let result = match self.ensure_admin_conn(&mut slot) {
                Err(e) => Err(e),
                Ok(conn) => f(conn),
            };
            if slot.conn.as_ref().is_some_and(|c| c.is_broken()) {
                slot.conn = None;
                slot.last_failure = Some(Instant::now());
            }
            match result {
                Err(e) if is_connection_error(&e) && attempt < retries => {
                    log::debug!("kafka: {e}; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
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
    /// it runs once more on a new one. `f` must not call `with_node` itself.
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
        let mut retried = false;
        loop {
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
            let result = match slot.conn.as_mut() {
                Some(conn) => f(conn),
                None => Err(Error::Protocol("pooled connection missing".into())),
            };
            if slot.conn.as_ref().is_some_and(|c| c.is_broken()) {
                slot.conn = None;
                slot.last_failure = Some(Instant::now());
                // An idle pooled connection may have been closed by the
                // broker (connections.max.idle.ms): one more try on a new one.
                if !retried && matches!(result, Err(Error::Io { .. })) {
                    retried = true;
                    slot.last_failure = None;
                    continue;
                }
            }
            return result;
        }
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
        let timeout = self.config.request_timeout;
        let ctx = format!("CreateTopics {topic}");
        let mut attempt = 0;
        loop {
            let resp = self.with_admin(self.config.max_retries, |c| {
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
                0 | TOPIC_ALREADY_EXISTS => break,
                code if KafkaCode::from(code).is_retriable()
                    && attempt < self.config.max_retries =>
                {
                    // NOT_CONTROLLER (41) and friends: new metadata, try again.
                    log::debug!("kafka: {ctx}: {} ({code}); retrying", code_name(code));
                    attempt += 1;
                    thread::sleep(self.config.retry_backoff);
                    let _ = self.refresh_metadata(&[]);
                }
                code => {
                    let ctx = match &result.error_message {
                        Some(m) if !m.is_empty() => format!("{ctx} ({})", &**m),
                        _ => ctx,
                    };
                    return Err(Error::kafka(ctx, code));
                }
            }
        }
        self.wait_for_topic(topic)
    }

    /// Waits (bounded by `request_timeout`) until metadata shows `topic` with
    /// a leader for every partition.
    fn wait_for_topic(&self, topic: &str) -> Result<()> {
        let deadline = Instant::now() + self.config.request_timeout;
        let backoff = self.config.retry_backoff.min(Duration::from_millis(50));
        loop {
            let state = self.fetch_metadata(&[topic.to_string()])?;
            if let Some(TopicState::Leaders(l)) = state.get(topic) {
                if !l.is_empty() && l.iter().all(|&x| x >= 0) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "topic {topic} created but not visible in metadata after {:?} (last: {:?})",
                    self.config.request_timeout,
                    state.get(topic)
                )));
            }
            thread::sleep(backoff);
        }
    }
}

/// Errors after which the same request may work on a new connection.
pub(crate) fn is_connection_error(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::Timeout(_))
}

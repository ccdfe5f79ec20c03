//! Helpers shared by the integration tests; each test file says `mod common;`.
//!
//! Kafka tests get their broker from `KAFKA_BOOTSTRAP`, which `scripts/test`
//! (via `scripts/test-broker`) sets after starting a throw-away Tansu. They
//! never skip: without a broker [`kafka_bootstrap`] panics with instructions.
//!
//! * [`unique`]: per-test topic and group names.
//! * [`create_topic`]: Tansu creates no topic on its own (see below).
//! * [`Peer`]: drives a real peer client (confluent-kafka / kafka-python) via
//!   `tests/py/peer.py` for interop tests.
//! * [`TansuBroker`]: a private broker, optionally behind a fault-injecting
//!   [`proxy::Proxy`] that it advertises, for outage tests.
//! * [`eventually`]: poll a condition with a deadline.
//!
//! Tansu quirks worth knowing when writing tests:
//! * A JoinGroup completes only after about half the session timeout: keep
//!   session timeouts short (1-2 s) in group tests.
//! * Memory storage dies with the process: simulate outages with the proxy,
//!   not by restarting the broker.
//! * A Metadata request with `allow_auto_topic_creation = true` (librdkafka
//!   producers send it) creates the topic with Tansu's default partition count;
//!   plain consumers get UNKNOWN_TOPIC_OR_PARTITION.
#![allow(dead_code)]

pub mod cluster;
pub mod fake_broker;
pub mod proxy;
pub mod raw_kafka;
pub mod secure;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Message for a Kafka test that finds no broker.
pub const NO_BROKER: &str = "Kafka tests need a broker: run `scripts/test` (starts Tansu) \
                             or set KAFKA_BOOTSTRAP=host:port";

/// The broker to test against (`host:port`), from `KAFKA_BOOTSTRAP`.
///
/// Panics when it is not set: Kafka tests must fail loudly, never skip.
pub fn kafka_bootstrap() -> String {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b.trim().to_string(),
        _ => panic!("{NO_BROKER}"),
    }
}

/// True when `scripts/test-broker` started Tansu for this run (as opposed to
/// an external broker given by the user).
pub fn broker_is_tansu() -> bool {
    std::env::var("KAFKA_RETRY_BROKER").as_deref() == Ok("tansu")
}

/// A python with confluent-kafka and kafka-python, from `KAFKA_RETRY_PYTHON`
/// (set by `scripts/test-broker`, made by `scripts/python-peers`).
pub fn python() -> Option<PathBuf> {
    std::env::var_os("KAFKA_RETRY_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// [`python`], or else the venv that `scripts/python-peers` makes (cached;
/// seconds the first time). Panics with instructions if neither works.
pub fn require_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = python() {
        return p;
    }
    PY.get_or_init(|| {
        let script = repo_root().join("scripts").join("python-peers");
        match Command::new(&script).stderr(Stdio::inherit()).output() {
            Ok(out) if out.status.success() => {
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
            r => panic!(
                "interop tests need a python with confluent-kafka and kafka-python: {} failed \
                 ({r:?}); run `scripts/test` or set KAFKA_RETRY_PYTHON",
                script.display()
            ),
        }
    })
    .clone()
}

/// The crate root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/py/peer.py`.
pub fn peer_script() -> PathBuf {
    py_script("peer.py")
}

/// `tests/py/<name>`.
pub fn py_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("py").join(name)
}

/// A name no other test (in this or any earlier run) uses:
/// `<name>-<pid>-<counter>-<nanos>`, restricted to the characters Kafka allows
/// in topic names.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{clean}-{}-{n}-{nanos}", std::process::id())
}

/// Calls `cond` every 20 ms until it returns true; false if `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The arguments that make this test binary run just its ignored test
/// `name`, on one thread: the child half of a test that needs a process of
/// its own (to kill it, cap its memory or change its environment).
pub fn child_test_args(name: &str) -> [&str; 5] {
    [
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// This test binary, set to run just its ignored test `name` (see
/// [`child_test_args`]).
pub fn child_test(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(child_test_args(name));
    cmd
}

/// The retry headers the relay requires on a retry-topic record: a record
/// missing any of them is dead-lettered as malformed (`retry.reason` is
/// optional).
pub const REQUIRED_RETRY_HEADERS: [&str; 6] = [
    kafka_retry::ORIGIN_TOPIC,
    kafka_retry::ORIGIN_PARTITION,
    kafka_retry::ORIGIN_OFFSET,
    kafka_retry::FIRST_RECEIVED_AT,
    kafka_retry::ENQUEUED_AT,
    kafka_retry::ATTEMPTS,
];

/// `topic`'s partitions `parts`.
pub fn tps(topic: &str, parts: impl IntoIterator<Item = i32>) -> Vec<kafka_retry::TopicPartition> {
    parts
        .into_iter()
        .map(|p| kafka_retry::TopicPartition::new(topic, p))
        .collect()
}

/// Turns on `env_logger` (RUST_LOG=kafka_retry=debug ...) once per test binary.
pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

// ---------------------------------------------------------------------------
// Topics

/// Creates `topic` with `partitions` partitions on the [`kafka_bootstrap`]
/// broker. Panics if that fails (including "already exists").
pub fn create_topic(topic: &str, partitions: i32) {
    create_topic_on(&kafka_bootstrap(), topic, partitions)
}

/// Creates a topic on the broker at `bootstrap`: with the python admin client
/// if `KAFKA_RETRY_PYTHON` is set, else with `tansu topic create` if the broker
/// is the Tansu of `scripts/test-broker`, else with the python admin client of
/// [`require_python`].
pub fn create_topic_on(bootstrap: &str, topic: &str, partitions: i32) {
    if python().is_none() && broker_is_tansu() {
        tansu_create_topic(bootstrap, topic, partitions)
    } else {
        Peer::on(bootstrap).create_topic(topic, partitions)
    }
}

/// Creates a topic with `tansu topic create` (Tansu brokers only). It talks to
/// `bootstrap` alone, whatever the broker advertises.
pub fn tansu_create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let parts = partitions.to_string();
    let tansu = tansu_bin();
    let out = Command::new(&tansu)
        .args(["topic", "create", "--broker"])
        .arg(format!("tcp://{bootstrap}"))
        .args(["--partitions", &parts, topic])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tansu.display()));
    assert!(
        out.status.success(),
        "tansu topic create {topic} on {bootstrap}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Peer clients (tests/py/peer.py)

/// Which peer client `tests/py/peer.py` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerClient {
    /// confluent-kafka (librdkafka).
    Confluent,
    /// kafka-python (cannot send null header values, nor key and value both null).
    KafkaPython,
}

impl PeerClient {
    fn arg(self) -> &'static str {
        match self {
            PeerClient::Confluent => "confluent",
            PeerClient::KafkaPython => "kafka-python",
        }
    }
}

/// A record as the peer script reads or prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRecord {
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value (None: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers in wire order; duplicate keys allowed.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Target partition when producing; the partition read when consuming.
    pub partition: Option<i32>,
    /// Offset (consumed records only).
    pub offset: Option<i64>,
    /// Timestamp in ms (optional when producing).
    pub timestamp: Option<i64>,
}

impl PeerRecord {
    /// A record with this key and value, no headers, partition left to the
    /// peer's partitioner.
    pub fn new(key: Option<&[u8]>, value: Option<&[u8]>) -> PeerRecord {
        PeerRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            ..PeerRecord::default()
        }
    }

    fn to_json(&self) -> Value {
        let b = |v: &Option<Vec<u8>>| v.as_deref().map(b64_encode);
        json!({
            "key": b(&self.key),
            "value": b(&self.value),
            "headers": self.headers.iter().map(|(k, v)| json!([k, b(v)])).collect::<Vec<_>>(),
            "partition": self.partition,
            "timestamp": self.timestamp,
        })
    }

    fn from_json(v: &Value) -> PeerRecord {
        let bytes = |v: &Value| -> Option<Vec<u8>> {
            v.as_str().map(|s| {
                b64_decode(s).unwrap_or_else(|| panic!("peer.py printed bad base64 {s:?}"))
            })
        };
        let headers = v["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h[0].as_str().unwrap_or_default().to_string(), bytes(&h[1])))
                    .collect()
            })
            .unwrap_or_default();
        PeerRecord {
            key: bytes(&v["key"]),
            value: bytes(&v["value"]),
            headers,
            partition: v["partition"].as_i64().map(|p| p as i32),
            offset: v["offset"].as_i64(),
            timestamp: v["timestamp"].as_i64(),
        }
    }
}

/// Drives `tests/py/peer.py`: a real peer client (confluent-kafka by default)
/// on one broker. Every method panics with the script's stderr on failure,
/// except the `try_` ones.
#[derive(Clone, Debug)]
pub struct Peer {
    bootstrap: String,
    client: PeerClient,
}

impl Default for Peer {
    fn default() -> Peer {
        Peer::new()
    }
}

impl Peer {
    /// A confluent-kafka peer on the [`kafka_bootstrap`] broker.
    pub fn new() -> Peer {
        Peer::on(&kafka_bootstrap())
    }

    /// A confluent-kafka peer on the broker at `bootstrap`.
    pub fn on(bootstrap: &str) -> Peer {
        Peer {
            bootstrap: bootstrap.to_string(),
            client: PeerClient::Confluent,
        }
    }

    /// The same peer using another client library.
    pub fn with_client(mut self, client: PeerClient) -> Peer {
        self.client = client;
        self
    }

    fn args<'a>(&'a self, cmd: &'a str, topic: &'a str) -> Vec<&'a str> {
        vec![
            cmd,
            "--client",
            self.client.arg(),
            "--bootstrap",
            &self.bootstrap,
            "--topic",
            topic,
        ]
    }

    /// Creates `topic` (fails if it exists).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let parts = partitions.to_string();
        let mut args = self.args("create-topic", topic);
        args.extend_from_slice(&["--partitions", &parts]);
        peer_run(&args, None);
    }

    /// Produces `records` (waiting for every delivery); returns each record's
    /// (partition, offset), in order. `extra`: e.g. `["--compression", "zstd"]`.
    pub fn produce(&self, topic: &str, records: &[PeerRecord], extra: &[&str]) -> Vec<(i32, i64)> {
        let mut args = self.args("produce", topic);
        args.extend_from_slice(extra);
        let input: String = records
            .iter()
            .map(|r| format!("{}\n", r.to_json()))
            .collect();
        partition_offsets(peer_run(&args, Some(input)))
    }

    /// Reads `count` records, from the beginning of every partition (no
    /// group), or with `extra = ["--group", g, "--commit"]` as a group member.
    /// Panics if fewer arrive within `timeout`.
    pub fn consume(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
        extra: &[&str],
    ) -> Vec<PeerRecord> {
        self.try_consume(topic, count, timeout, extra)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Peer::consume`] returning the failure (timeout, unknown topic, ...).
    pub fn try_consume(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
        extra: &[&str],
    ) -> Result<Vec<PeerRecord>, String> {
        let count = count.to_string();
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let mut args = self.args("consume", topic);
        args.extend_from_slice(&["--count", &count, "--timeout", &secs]);
        args.extend_from_slice(extra);
        Ok(peer_try_run(&args, None)?
            .iter()
            .map(PeerRecord::from_json)
            .collect())
    }

    /// The offsets `group` has committed on each partition of `topic`:
    /// (partition, offset), offset -1 when none.
    pub fn committed(&self, topic: &str, group: &str) -> Vec<(i32, i64)> {
        let mut args = self.args("committed", topic);
        args.extend_from_slice(&["--group", group]);
        partition_offsets(peer_run(&args, None))
    }
}

/// Runs `peer.py <args>` with `stdin`; panics on failure; returns the JSON
/// lines it printed.
pub fn peer_run(args: &[&str], stdin: Option<String>) -> Vec<Value> {
    peer_try_run(args, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `peer.py <args>` with `stdin`; returns the JSON lines it printed, or a
/// message with its exit status and stderr.
pub fn peer_try_run(args: &[&str], stdin: Option<String>) -> Result<Vec<Value>, String> {
    py_try_run("peer.py", args, stdin)
}

/// Runs `tests/py/<script> <args>` with `stdin`; returns the JSON lines it
/// printed, or a message with its exit status and stderr.
pub fn py_try_run(
    script: &str,
    args: &[&str],
    stdin: Option<String>,
) -> Result<Vec<Value>, String> {
    let py = require_python();
    let path = py_script(script);
    let mut child = Command::new(&py)
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} {}: {e}", py.display(), path.display()));
    if let Some(mut pipe) = child.stdin.take() {
        // A write error means the script died early; its stderr says why.
        let _ = pipe.write_all(stdin.unwrap_or_default().as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{script} {} failed ({}):\nstderr: {}\nstdout: {stdout}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script} printed {l:?}: {e}")))
        .collect())
}

fn partition_offsets(lines: Vec<Value>) -> Vec<(i32, i64)> {
    lines
        .iter()
        .map(|v| match (v["partition"].as_i64(), v["offset"].as_i64()) {
            (Some(p), Some(o)) => (p as i32, o),
            _ => panic!("peer.py printed {v}, expected partition and offset"),
        })
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what python's `base64.b64encode` writes).
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Inverse of [`b64_encode`]; None on malformed input.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 6 bits left over cannot come from whole bytes.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// A private Tansu broker (outage tests)

/// The tansu binary: `TANSU_BIN` (set by `scripts/test-broker`), else whatever
/// `scripts/tansu` finds or installs.
pub fn tansu_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TANSU_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let script = repo_root().join("scripts").join("tansu");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            out.status
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("pick a free port: {e}"))
}

/// A Tansu broker owned by one test (memory storage), killed on drop.
///
/// Use it when a test needs to break the network between the client and the
/// broker: [`TansuBroker::start_behind_proxy`] makes the broker advertise a
/// proxy's address, so that every connection, not just the bootstrap one, goes
/// through the proxy.
pub struct TansuBroker {
    child: Child,
    /// Where the broker itself listens.
    listen: String,
    proxy: Option<proxy::Proxy>,
    log: PathBuf,
}

impl TansuBroker {
    /// Starts a broker that clients reach directly.
    pub fn start() -> TansuBroker {
        Self::start_inner(false)
    }

    /// Starts a broker behind a [`proxy::Proxy`]; the broker advertises the
    /// proxy's address, and [`TansuBroker::bootstrap`] is the proxy's too.
    pub fn start_behind_proxy() -> TansuBroker {
        Self::start_inner(true)
    }

    fn start_inner(with_proxy: bool) -> TansuBroker {
        let tansu = tansu_bin();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let _ = std::fs::create_dir_all(&dir);
        let mut last_log = String::new();
        // The port is free when picked but may be taken before Tansu binds it.
        for _attempt in 0..3 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let proxy = if with_proxy {
                Some(proxy::Proxy::start(&listen).unwrap_or_else(|e| panic!("start proxy: {e}")))
            } else {
                None
            };
            let advertised = proxy.as_ref().map_or_else(|| listen.clone(), |p| p.addr());
            let log = dir.join(format!("tansu-{port}.log"));
            let log_file = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
            let log_err = log_file
                .try_clone()
                .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
            let child = Command::new(&tansu)
                .arg("broker")
                .arg("--listener-url")
                .arg(format!("tcp://{listen}"))
                .arg("--advertised-listener-url")
                .arg(format!("tcp://{advertised}"))
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", tansu.display()));
            let mut broker = TansuBroker {
                child,
                listen,
                proxy,
                log,
            };
            match broker.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return broker,
                Err(e) => last_log = format!("{e}\n{}", broker.log_tail()),
            }
            // Drop kills it; try another port.
        }
        panic!("tansu broker did not start:\n{last_log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "tansu exited during start-up: {status}"
                )));
            }
            if TcpStream::connect(&self.listen).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("tansu not accepting on {} after {timeout:?}", self.listen),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What clients should bootstrap from: the proxy when there is one.
    pub fn bootstrap(&self) -> String {
        self.proxy
            .as_ref()
            .map_or_else(|| self.listen.clone(), |p| p.addr())
    }

    /// The proxy in front of the broker. Panics for a broker started without.
    pub fn proxy(&self) -> &proxy::Proxy {
        self.proxy
            .as_ref()
            .expect("TansuBroker::proxy: started without a proxy (use start_behind_proxy)")
    }

    /// Creates a topic on this broker.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        // Straight to the broker, not through the proxy (which may be cut):
        // the python admin client would follow the advertised proxy address.
        tansu_create_topic(&self.listen, topic, partitions)
    }

    /// The broker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        // Proxy first, so that clients see connections close, then the broker.
        self.proxy.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Joint assignment (`ConsumerConfig::claims`) on any transport: two
/// members of `group` on `topic` (4 partitions) claim what their member
/// order would not give them, and get it; a new claim rebalances the group
/// and is honoured too (under cooperative, after the owner revoked it).
/// `base` makes each member's config.
pub fn claims_are_followed(
    transport: std::sync::Arc<dyn kafka_retry::transport::Transport>,
    base: impl Fn() -> kafka_retry::transport::ConsumerConfig,
) {
    use kafka_retry::transport::Claims;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    let topic = base().topics[0].clone();
    let claims = [Claims::new(), Claims::new()];
    // The member made first sorts first under range on the memory broker:
    // it claims the upper half.
    claims[0].set(tps(&topic, [2, 3]), 1);
    claims[1].set(tps(&topic, [0, 1]), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let owned: Arc<Mutex<[Vec<kafka_retry::TopicPartition>; 2]>> = Arc::default();
    let threads: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut cfg = base();
            cfg.claims = Some(c.clone());
            let mut consumer = transport.consumer(cfg).unwrap();
            let (stop, owned) = (stop.clone(), owned.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = consumer.poll(Duration::from_millis(50)) {
                        panic!("member {i}: {e}");
                    }
                    let mut a = consumer.assignment();
                    a.sort();
                    owned.lock().unwrap()[i] = a;
                }
                let _ = consumer.close();
            })
        })
        .collect();
    let follows = |a: &[i32], b: &[i32]| {
        eventually(Duration::from_secs(30), || {
            let o = owned.lock().unwrap();
            o[0] == tps(&topic, a.iter().copied()) && o[1] == tps(&topic, b.iter().copied())
        })
    };
    let first = follows(&[2, 3], &[0, 1]);
    let at_first = owned.lock().unwrap().clone();
    // A new claim: member 1 takes 3 over.
    claims[0].set(tps(&topic, [2]), 2);
    claims[1].set(tps(&topic, [0, 1, 3]), 2);
    let second = follows(&[2], &[0, 1, 3]);
    let at_second = owned.lock().unwrap().clone();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(first, "first claims not followed: {at_first:?}");
    assert!(second, "changed claims not followed: {at_second:?}");
}

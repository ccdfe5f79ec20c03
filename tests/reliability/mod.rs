//! Helpers for tests/reliability_kafka.rs: seeded fates, a dead-letter
//! collector, a durable "done" log that survives SIGKILL, and the no-loss
//! accounting shared by the scenarios.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{OutRecord, Outcome, Record};

/// `KAFKA_RETRY_SEED` (decimal or 0x-hex), else a fixed default.
pub fn seed() -> u64 {
    let parse = |s: &str| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    };
    std::env::var("KAFKA_RETRY_SEED")
        .ok()
        .and_then(|s| parse(&s))
        .unwrap_or(0x5eed_2024)
}

/// xorshift64: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // xorshift must not start at 0.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..=hi` (ms).
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

/// What the handler does with a record; carried in the record's value so
/// that every process (and every restart) decides the same way, and "once"
/// is judged from the `retry.attempts` header, not from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Done at once.
    Done,
    /// Retry on the first attempt, done once relayed.
    RetryOnce,
    /// Reject: dead-lettered `rejected`.
    Reject,
    /// Panic on the first attempt, done once relayed.
    PanicOnce,
    /// Retry forever: dead-lettered `expired`.
    AlwaysRetry,
    /// Retry on the first three attempts, then done (key order: a key
    /// that fails repeatedly).
    RetryThrice,
}

impl Fate {
    pub fn code(self) -> char {
        match self {
            Fate::Done => 'd',
            Fate::RetryOnce => 'r',
            Fate::Reject => 'x',
            Fate::PanicOnce => 'p',
            Fate::AlwaysRetry => 'a',
            Fate::RetryThrice => 't',
        }
    }
    pub fn from_code(c: char) -> Option<Fate> {
        Some(match c {
            'd' => Fate::Done,
            'r' => Fate::RetryOnce,
            'x' => Fate::Reject,
            'p' => Fate::PanicOnce,
            'a' => Fate::AlwaysRetry,
            't' => Fate::RetryThrice,
            _ => return None,
        })
    }
    /// Whether the handler ever returns `Done` for it.
    pub fn can_finish(self) -> bool {
        matches!(
            self,
            Fate::Done | Fate::RetryOnce | Fate::PanicOnce | Fate::RetryThrice
        )
    }
}

/// A seeded mix: `weights` are percentages for Done, RetryOnce, Reject,
/// PanicOnce, AlwaysRetry (summing to 100).
pub fn fates(rng: &mut Rng, n: usize, weights: [u64; 5]) -> Vec<Fate> {
    assert_eq!(weights.iter().sum::<u64>(), 100);
    let all = [
        Fate::Done,
        Fate::RetryOnce,
        Fate::Reject,
        Fate::PanicOnce,
        Fate::AlwaysRetry,
    ];
    (0..n)
        .map(|_| {
            let mut x = rng.next() % 100;
            for (f, w) in all.iter().zip(weights) {
                if x < w {
                    return *f;
                }
                x -= w;
            }
            unreachable!()
        })
        .collect()
}

/// The record for id `id`: key `k<id % keys>`, value `<id>:<fate>`.
pub fn out_record(topic: &str, id: u64, fate: Fate, keys: u64) -> OutRecord {
    OutRecord::new(topic)
        .key(format!("k{}", id % keys))
        .value(format!("{id}:{}", fate.code()))
}

/// Id and fate of a record made by [`out_record`]; `None` for anything else.
pub fn parse_value(r: &Record) -> Option<(u64, Fate)> {
    let v = std::str::from_utf8(r.value.as_deref()?).ok()?;
    let (id, fate) = v.split_once(':')?;
    Some((id.parse().ok()?, Fate::from_code(fate.chars().next()?)?))
}

/// The handler's decision for a record made by [`out_record`]. First attempt
/// = no `retry.attempts` header. Panics (on purpose) for PanicOnce.
pub fn decide(r: &Record) -> (Option<u64>, Outcome) {
    let Some((id, fate)) = parse_value(r) else {
        return (None, Outcome::reject("not a test record"));
    };
    let first = r.header(kafka_retry::ATTEMPTS).is_none();
    let outcome = match fate {
        Fate::Done => Outcome::Done,
        Fate::RetryOnce if first => Outcome::retry("not yet"),
        Fate::RetryOnce => Outcome::Done,
        Fate::Reject => Outcome::reject("bad record"),
        Fate::PanicOnce if first => panic!("injected panic {id}"),
        Fate::PanicOnce => Outcome::Done,
        Fate::AlwaysRetry => Outcome::retry("never works"),
        Fate::RetryThrice if r.attempts() < 3 => Outcome::retry("not yet"),
        Fate::RetryThrice => Outcome::Done,
    };
    (Some(id), outcome)
}

/// [`decide`] for `KeyOrder::Kept`, where "first" is `r.attempts() == 0`:
/// a record held behind its key comes back with `retry.attempts: 0` and
/// has not been through the handler yet, so it may fail on its release.
pub fn decide_kept(r: &Record) -> (Option<u64>, Outcome) {
    let Some((id, fate)) = parse_value(r) else {
        return (None, Outcome::reject("not a test record"));
    };
    let first = r.attempts() == 0;
    let outcome = match fate {
        Fate::Done => Outcome::Done,
        Fate::RetryOnce if first => Outcome::retry("not yet"),
        Fate::PanicOnce if first => panic!("injected panic {id}"),
        Fate::RetryOnce | Fate::PanicOnce => Outcome::Done,
        Fate::Reject => Outcome::reject("bad record"),
        Fate::AlwaysRetry => Outcome::retry("never works"),
        Fate::RetryThrice if r.attempts() < 3 => Outcome::retry("not yet"),
        Fate::RetryThrice => Outcome::Done,
    };
    (Some(id), outcome)
}

// ---------------------------------------------------------------------------
// Order log: one line per successful handling, in handling order, shared by
// every process of a test (O_APPEND: each line is one write(2), so lines of
// concurrent processes never interleave within a line).

/// Appends `done|reject <id> <wall ms> <check>` lines. No fsync: a SIGKILLed
/// process's completed write(2) stays in the page cache, and only the
/// machine crashing would lose it (not part of these tests).
pub struct OrderLog {
    file: File,
}

impl OrderLog {
    pub fn open(path: &Path) -> OrderLog {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        OrderLog { file }
    }
    /// Call before the handler returns `Done` (`rejected` false) or
    /// `Reject` (true).
    pub fn record(&self, id: u64, rejected: bool) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let tag = if rejected { "reject" } else { "done" };
        let line = format!("{tag} {id} {ms} {}\n", check(id, ms));
        (&self.file)
            .write_all(line.as_bytes())
            .expect("append to the order log");
    }
}

fn check(id: u64, ms: i64) -> u64 {
    id.wrapping_mul(31).wrapping_add(ms as u64).wrapping_add(7)
}

/// One line of an order log.
#[derive(Clone, Copy, Debug)]
pub struct Handling {
    pub id: u64,
    /// Wall-clock ms.
    pub at: i64,
    /// `Reject` rather than `Done`.
    pub rejected: bool,
}

/// Every valid line of an order log, in file (= handling) order, and the
/// count of torn lines (must be 0).
pub fn read_order_log(path: &Path) -> (Vec<Handling>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut torn = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let parsed = match f.as_slice() {
            [tag @ ("done" | "reject"), id, ms, c] => {
                match (id.parse::<u64>(), ms.parse::<i64>(), c.parse::<u64>()) {
                    (Ok(id), Ok(at), Ok(c)) if c == check(id, at) => Some(Handling {
                        id,
                        at,
                        rejected: *tag == "reject",
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        match parsed {
            Some(e) => out.push(e),
            None => torn += 1,
        }
    }
    (out, torn)
}

/// Silences the panics [`decide`] injects; any other panic still prints.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_quiet_hook);
}

fn install_quiet_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !msg.starts_with("injected panic") {
            default(info);
        }
    }));
}

// ---------------------------------------------------------------------------
// Done log: one line per Done, written and fsynced before the handler
// returns, so that it survives SIGKILL of the writer.

/// Appends `id` lines to a file; shared by the workers of one process.
pub struct DoneLog {
    file: File,
}

/// A line that cannot be confused with a torn or merged one.
fn done_line(id: u64) -> String {
    format!("done {id} {}\n", id.wrapping_mul(31).wrapping_add(7))
}

impl DoneLog {
    pub fn open(path: &Path) -> DoneLog {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        DoneLog { file }
    }
    /// One `write` (O_APPEND) and an fdatasync.
    pub fn record(&self, id: u64) {
        (&self.file)
            .write_all(done_line(id).as_bytes())
            .expect("append to the done log");
        self.file.sync_data().expect("fsync the done log");
    }
}

/// Every valid line of a done log: id -> times done. Torn lines are counted
/// apart (they must be 0: a write(2) is not split by SIGKILL).
pub fn read_done_log(path: &Path) -> (HashMap<u64, u32>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut done = HashMap::new();
    let mut torn = 0;
    for line in text.lines() {
        let mut it = line.split(' ');
        let ok = match (it.next(), it.next(), it.next(), it.next()) {
            (Some("done"), Some(id), Some(check), None) => {
                match (id.parse::<u64>(), check.parse::<u64>()) {
                    (Ok(id), Ok(c)) if c == id.wrapping_mul(31).wrapping_add(7) => {
                        *done.entry(id).or_insert(0) += 1;
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !ok {
            torn += 1;
        }
    }
    (done, torn)
}

// ---------------------------------------------------------------------------
// Dead-letter collector

/// A dead letter as read back from `<group>-dlt`.
#[derive(Clone, Debug)]
pub struct Dead {
    pub id: Option<u64>,
    pub reason: String,
    /// `retry.dead-lettered-at` (wall ms).
    pub at: Option<i64>,
}

/// Reads a topic from the beginning in a background thread (its own group)
/// and keeps every record's id and `retry.dead-reason`.
pub struct Collector {
    seen: Arc<Mutex<Vec<Dead>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn start(transport: Arc<dyn Transport>, topic: &str, session: Duration) -> Collector {
        let mut cfg = ConsumerConfig::new(crate::common::unique("dlt-reader"), [topic]);
        cfg.session_timeout = session;
        cfg.rebalance_timeout = session * 2;
        let mut consumer = transport.consumer(cfg).expect("dead-letter reader");
        let seen: Arc<Mutex<Vec<Dead>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, e, st) = (seen.clone(), errors.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match consumer.poll(Duration::from_millis(100)) {
                    Ok(ConsumerEvent::Records(rs)) => {
                        let mut s = s.lock().unwrap();
                        for r in rs {
                            s.push(Dead {
                                id: parse_value(&r).map(|(id, _)| id),
                                reason: r
                                    .header(kafka_retry::DEAD_REASON)
                                    .and_then(|h| h.value.as_deref())
                                    .map(|v| String::from_utf8_lossy(v).into_owned())
                                    .unwrap_or_default(),
                                at: r
                                    .header(kafka_retry::DEAD_LETTERED_AT)
                                    .and_then(|h| h.value.as_deref())
                                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let mut e = e.lock().unwrap();
                        if e.len() < 20 {
                            e.push(err.to_string());
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            let _ = consumer.close();
        });
        Collector {
            seen,
            errors,
            stop,
            handle: Some(handle),
        }
    }

    pub fn snapshot(&self) -> Vec<Dead> {
        self.seen.lock().unwrap().clone()
    }

    pub fn ids(&self) -> HashSet<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|d| d.id)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Waits until nothing new arrived for `quiet` (at most `max`).
    pub fn settle(&self, quiet: Duration, max: Duration) {
        let deadline = Instant::now() + max;
        let mut last = self.len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let n = self.len();
            if n != last {
                last = n;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Accounting

/// The end-of-scenario books: every id must be done or dead-lettered.
pub struct Books {
    /// Ids never done and never dead-lettered.
    pub lost: Vec<u64>,
    /// Done events plus dead letters beyond one per id.
    pub duplicates: usize,
    pub done_ids: usize,
    pub dead_ids: usize,
    /// Dead letters by reason.
    pub dead_reasons: HashMap<String, usize>,
    /// Ids that ended somewhere they must not (e.g. a Done record on the
    /// dead-letter topic, a rejected record done).
    pub misplaced: Vec<String>,
}

/// Balances `fates` (id = index) against done counts and dead letters.
pub fn balance(fates: &[Fate], done: &HashMap<u64, u32>, dead: &[Dead]) -> Books {
    let dead_ids: HashSet<u64> = dead.iter().filter_map(|d| d.id).collect();
    let mut dead_reasons: HashMap<String, usize> = HashMap::new();
    let mut misplaced = Vec::new();
    for d in dead {
        *dead_reasons.entry(d.reason.clone()).or_default() += 1;
        match d.id.and_then(|id| fates.get(id as usize).map(|f| (id, *f))) {
            None => misplaced.push(format!("dead letter not from this test: {d:?}")),
            Some((id, Fate::Done)) => {
                misplaced.push(format!("{id} (done at once) dead-lettered {}", d.reason))
            }
            Some((id, Fate::Reject)) if d.reason != "rejected" => {
                misplaced.push(format!("{id} (reject) dead-lettered {}", d.reason))
            }
            Some((id, f)) if f != Fate::Reject && d.reason != "expired" => {
                misplaced.push(format!("{id} ({f:?}) dead-lettered {}", d.reason))
            }
            _ => {}
        }
    }
    for (&id, _) in done.iter() {
        match fates.get(id as usize) {
            None => misplaced.push(format!("done id {id} was never produced")),
            Some(f) if !f.can_finish() => misplaced.push(format!("{id} ({f:?}) was done")),
            _ => {}
        }
    }
    let lost: Vec<u64> = (0..fates.len() as u64)
        .filter(|id| !done.contains_key(id) && !dead_ids.contains(id))
        .collect();
    let events: usize = done.values().map(|&c| c as usize).sum::<usize>() + dead.len();
    let covered = fates.len() - lost.len();
    Books {
        duplicates: events.saturating_sub(covered),
        lost,
        done_ids: done.len(),
        dead_ids: dead_ids.len(),
        dead_reasons,
        misplaced,
    }
}

/// "12 (RetryOnce), 40 (Done), ..." for the first few lost ids.
pub fn describe(ids: &[u64], fates: &[Fate]) -> String {
    let v: Vec<String> = ids
        .iter()
        .take(20)
        .map(|&id| format!("{id} ({:?})", fates.get(id as usize)))
        .collect();
    format!(
        "{}{}",
        v.join(", "),
        if ids.len() > 20 { ", ..." } else { "" }
    )
}

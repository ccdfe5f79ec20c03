//! The real `kafka-retry` binary against the broker in `KAFKA_BOOTSTRAP`
//! (Tansu, started by `scripts/test`): dead letters written by a real
//! engine, replays an engine then handles, a replay killed with SIGKILL
//! midway and run again.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_retry::transport::Transport;
use kafka_retry::{Engine, Header, KafkaConfig, KafkaTransport, OutRecord, Outcome, Record};
use serde_json::Value;

fn bootstrap() -> String {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b.trim().to_string(),
        // Kafka tests fail loudly, never skip.
        _ => panic!("Kafka tests need a broker: run `scripts/test` (starts Tansu) or set KAFKA_BOOTSTRAP=host:port"),
    }
}

fn kafka() -> Arc<KafkaTransport> {
    let _ = env_logger::builder().is_test(true).try_init();
    let config = KafkaConfig::new(bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    Arc::new(KafkaTransport::connect(config).expect("connect to the test broker"))
}

/// A name no earlier run used (Tansu's storage lives as long as the broker).
fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{prefix}-{}-{t}", std::process::id())
}

fn cli(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kafka-retry"))
        .args(["--bootstrap", &bootstrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kafka-retry");
    eprintln!(
        "kafka-retry {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every record of `topic`, as `dlt export` prints it (any topic reads).
///
/// Read with the binary, not an in-process reader: in this test process a
/// `Reader` on a `KafkaConfig` with `fetch_max_wait(50 ms)` saw only the
/// first records of partitions Tansu had more in (3 of 30, 32 of 60),
/// while the binary (default settings) saw them all. Left for the client's
/// owners; see the report.
fn all(topic: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_kafka-retry"))
        .args(["--bootstrap", &bootstrap(), "--dlt", topic, "dlt", "export"])
        .stdin(Stdio::null())
        .output()
        .expect("run kafka-retry");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count(topic: &str) -> i64 {
    all(topic).len() as i64
}

/// The value of header `name` of an exported record.
fn header(v: &Value, name: &str) -> Option<String> {
    v["headers"]
        .as_array()?
        .iter()
        .rev()
        .find(|h| h["key"] == name)
        .and_then(|h| h["value"].as_str().map(str::to_string))
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn smoke_summary_export_and_replay_of_an_engines_dead_letters() {
    let k = kafka();
    let group = unique("cli");
    let topic = format!("{group}-orders");
    k.create_topic(&topic, 2, None).unwrap();
    let engine = Engine::builder(k.clone())
        .group_id(&group)
        .topics([&topic])
        .session_timeout(Duration::from_secs(2))
        .handler(|_r: &Record| Outcome::reject("downstream said no"))
        .build()
        .unwrap();
    let producer = k.producer().unwrap();
    for i in 0..30 {
        producer
            .send(
                OutRecord::new(&topic)
                    .key(format!("k-{i}"))
                    .value(format!("v-{i}")),
            )
            .unwrap();
    }
    wait_for("30 dead letters", 60, || {
        let out = cli(&["--group", &group, "dlt", "summary", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["records"] == 30)
    });
    engine.shutdown(Duration::from_secs(10)).unwrap();

    let out = cli(&["--group", &group, "dlt", "summary", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records"], 30);
    assert_eq!(v["distinct"], 30);
    assert_eq!(
        v["by_origin_topic_and_reason"][0]["origin_topic"],
        topic.as_str()
    );
    assert_eq!(
        v["by_origin_topic_and_reason"][0]["dead_reason"],
        "rejected"
    );
    assert_eq!(v["top_reasons"][0]["reason"], "downstream said no");
    let out = cli(&["--group", &group, "dlt", "summary"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("30 records, 30 distinct"));

    let out = cli(&[
        "--group", &group, "dlt", "export", "--format", "jsonl", "--key", "k-7",
    ]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["value"], "v-7");
    assert_eq!(lines[0]["retry"]["group"], group.as_str());
    assert_eq!(lines[0]["retry"]["origin_topic"], topic.as_str());

    let out = cli(&["--group", &group, "dlt", "replay", "--dry-run"]);
    assert!(out.status.success());
    assert_eq!(count(&topic), 30, "dry run wrote nothing");
    let out = cli(&["--group", &group, "dlt", "replay"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 30, parked 0"));
    let out = cli(&["--group", &group, "dlt", "replay"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("30 already replayed"),
        "a rerun replays nothing"
    );
    assert_eq!(count(&topic), 60);

    // The same group picks up after its committed offsets: only the replays.
    let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let s = seen.clone();
    let engine = Engine::builder(k.clone())
        .group_id(&group)
        .topics([&topic])
        .session_timeout(Duration::from_secs(2))
        .handler(move |r: &Record| {
            if r.header(kafka_retry::REPLAYED_FROM).is_some() && r.attempts() == 0 {
                *s.lock()
                    .unwrap()
                    .entry(
                        String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                    )
                    .or_default() += 1;
            }
            Outcome::Done
        })
        .build()
        .unwrap();
    wait_for("the engine to handle 30 replayed records", 60, || {
        seen.lock().unwrap().len() >= 30
    });
    engine.shutdown(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");

    let out = cli(&["--group", &group, "retry", "status", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["parked"], 0, "rejected records are never parked");
}

/// A replay killed with SIGKILL midway, then run again: every dead letter
/// replayed exactly once, none missed.
#[test]
fn a_replay_killed_midway_and_rerun_replays_each_record_once() {
    let k = kafka();
    let group = unique("cli-kill");
    let topic = format!("{group}-orders");
    let dlt = format!("{group}-dlt");
    k.create_topic(&topic, 2, None).unwrap();
    k.create_topic(&dlt, 2, None).unwrap();
    let producer = k.producer().unwrap();
    const N: usize = 80;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..N {
        let mut r = OutRecord::new(&dlt)
            .partition((i % 2) as i32)
            .key(format!("k-{i}"))
            .value(format!("v-{i}"));
        r.headers = vec![
            Header::new(kafka_retry::ORIGIN_TOPIC, topic.clone()),
            Header::new(kafka_retry::ORIGIN_PARTITION, (i % 2).to_string()),
            Header::new(kafka_retry::ORIGIN_OFFSET, i.to_string()),
            Header::new(kafka_retry::DEAD_REASON, "rejected"),
            Header::new(kafka_retry::DEAD_LETTERED_AT, now.to_string()),
        ];
        producer.send(r).unwrap();
    }
    // Killed three times, each once it has written a few more copies:
    // the kills land between batches or inside one (pending ledger
    // entries, copies written or not), wherever they happen to fall.
    let mut partial = 0;
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-retry"))
            .args([
                "--bootstrap",
                &bootstrap(),
                "--group",
                &group,
                "dlt",
                "replay",
            ])
            .args(["--rate", "10/s", "--settle", "3s"])
            // Pause 150 ms between the ledger writes of each batch (2
            // records at 10/s): most kills land between pending and done.
            .env("KAFKA_RETRY_CLI_TEST_PAUSE_MS", "150")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = partial;
        wait_for("more replayed records", 60, || count(&topic) >= before + 5);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        partial = count(&topic);
        eprintln!("kill {round}: {partial} copies");
    }
    assert!(
        (15..N as i64).contains(&partial),
        "killed midway: {partial} of {N}"
    );

    // The killed run's last requests may still be landing: the rerun
    // waits --settle after its newest ledger entry before checking.
    let out = cli(&[
        "--group", &group, "dlt", "replay", "--json", "--settle", "5s",
    ]);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_from: HashMap<String, usize> = HashMap::new();
    for r in all(&topic) {
        let from = header(&r, kafka_retry::REPLAYED_FROM);
        *by_from
            .entry(from.expect("every record is a replay"))
            .or_default() += 1;
    }
    assert_eq!(by_from.len(), N, "none missed: {report}");
    assert!(by_from.values().all(|&n| n == 1), "none twice: {by_from:?}");
    let again = cli(&["--group", &group, "dlt", "replay", "--json"]);
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (v["already_replayed"].as_u64(), v["selected"].as_u64()),
        (Some(N as u64), Some(0))
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_kafka-retry"))
        .args([
            "--bootstrap",
            "127.0.0.1:1",
            "--group",
            "g",
            "dlt",
            "summary",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to 127.0.0.1:1"));
    let out = cli(&["--group", &unique("none"), "dlt", "summary"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = cli(&["--dlt", "x", "dlt", "replay", "--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since `last tuesday`"));
    let out = cli(&["dlt", "summary"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --group"));
}

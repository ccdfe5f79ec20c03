//! Every command in-process against the memory broker: the functions
//! `main.rs` calls, with the same options.

use std::time::{Duration, Instant};

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{Engine, Header, MemoryBroker, OutRecord, Outcome, Record, TopicPartition};
use kafka_retry_cli::{
    export, replay, status, summary, ExportArgs, FilterArgs, ProgressMode, ReplayArgs, StatusArgs,
    SummaryArgs,
};
use serde_json::Value;

const NOW: i64 = 1_764_698_400_000; // 2025-12-02T18:00:00Z

/// A dead letter as the engine writes it.
fn dead(
    origin: &str,
    p: i32,
    o: i64,
    key: Option<&str>,
    dead_reason: &str,
    reason: &str,
    at: i64,
) -> OutRecord {
    let mut r = OutRecord::new("g-dlt").value(format!("value-{o}"));
    if let Some(k) = key {
        r = r.key(k.to_string());
    }
    r.headers = vec![
        Header::new("trace", format!("t-{o}")),
        Header::new(kafka_retry::ORIGIN_TOPIC, origin.to_string()),
        Header::new(kafka_retry::ORIGIN_PARTITION, p.to_string()),
        Header::new(kafka_retry::ORIGIN_OFFSET, o.to_string()),
        Header::new(kafka_retry::FIRST_RECEIVED_AT, (at - 1000).to_string()),
        Header::new(kafka_retry::ENQUEUED_AT, (at - 500).to_string()),
        Header::new(kafka_retry::ATTEMPTS, "2"),
        Header::new(kafka_retry::REASON, reason.to_string()),
        Header::new(kafka_retry::DEAD_REASON, dead_reason.to_string()),
        Header::new(kafka_retry::DEAD_LETTERED_AT, at.to_string()),
        Header::new(kafka_retry::GROUP, "g"),
    ];
    r.partition(0)
}

/// orders (2 partitions), payments (1), g-dlt (1) with six dead letters,
/// one a duplicate (same origin coordinates) of another.
fn broker() -> MemoryBroker {
    let b = MemoryBroker::new();
    b.create_topic("orders", 2).unwrap();
    b.create_topic("payments", 1).unwrap();
    b.create_topic("g-dlt", 1).unwrap();
    for r in [
        dead("orders", 0, 10, Some("k-1"), "rejected", "bad order", NOW),
        dead(
            "orders",
            1,
            11,
            Some("k-2"),
            "rejected",
            "bad order",
            NOW + 60_000,
        ),
        dead(
            "orders",
            0,
            12,
            Some("x-3"),
            "expired",
            "db down",
            NOW + 120_000,
        ),
        dead("payments", 0, 5, None, "attempts", "timeout", NOW + 180_000),
        dead(
            "orders",
            0,
            10,
            Some("k-1"),
            "rejected",
            "bad order",
            NOW + 240_000,
        ),
        dead(
            "orders",
            1,
            13,
            Some("k-4"),
            "rejected",
            "other",
            NOW + 300_000,
        ),
    ] {
        b.produce(r).unwrap();
    }
    b
}

fn run_summary(b: &MemoryBroker, args: SummaryArgs) -> String {
    let mut out = Vec::new();
    summary(&mut *b.reader().unwrap(), "g-dlt", &args, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn run_replay(
    b: &MemoryBroker,
    args: ReplayArgs,
) -> kafka_retry_cli::Result<kafka_retry_cli::ReplayReport> {
    let mut out = Vec::new();
    let r = replay(b, "g-dlt", &args, ProgressMode::Off, &mut out);
    eprintln!("{}", String::from_utf8_lossy(&out));
    r
}

fn all(b: &MemoryBroker, topic: &str) -> Vec<Record> {
    let n = b.partition_count(topic).unwrap().unwrap_or(0);
    (0..n).flat_map(|p| b.records(topic, p).unwrap()).collect()
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.header(name)
        .and_then(|h| h.value.as_deref())
        .map(|v| std::str::from_utf8(v).unwrap())
}

#[test]
fn smoke_summary_counts_reasons_and_duplicates() {
    let b = broker();
    let v: Value = serde_json::from_str(&run_summary(
        &b,
        SummaryArgs {
            json: true,
            ..Default::default()
        },
    ))
    .unwrap();
    assert_eq!(v["records"], 6);
    assert_eq!(v["distinct"], 5);
    assert_eq!(v["duplicates"], 1);
    let by = v["by_origin_topic_and_reason"].as_array().unwrap();
    let count = |t: &str, r: &str| {
        by.iter()
            .find(|e| e["origin_topic"] == t && e["dead_reason"] == r)
            .map_or(0, |e| e["count"].as_u64().unwrap())
    };
    assert_eq!(
        (
            count("orders", "rejected"),
            count("orders", "expired"),
            count("payments", "attempts")
        ),
        (4, 1, 1)
    );
    assert_eq!(v["top_reasons"][0]["reason"], "bad order");
    assert_eq!(v["top_reasons"][0]["count"], 3);
    assert_eq!(v["oldest"], "2025-12-02T18:00:00.000Z");
    assert_eq!(v["newest"], "2025-12-02T18:05:00.000Z");
    let hist: u64 = v["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["count"].as_u64().unwrap())
        .sum();
    assert_eq!(hist, 6);
    let text = run_summary(&b, SummaryArgs::default());
    assert!(text.contains("6 records, 5 distinct"), "{text}");
    assert!(text.contains("origin topic"), "{text}");
    assert!(text.contains("payments"), "{text}");
    // Filters apply to the summary too.
    let v: Value = serde_json::from_str(&run_summary(
        &b,
        SummaryArgs {
            json: true,
            filter: FilterArgs {
                origin_topic: vec!["payments".into()],
                ..Default::default()
            },
        },
    ))
    .unwrap();
    assert_eq!(v["records"], 1);
}

#[test]
fn export_writes_one_decoded_object_per_dead_letter() {
    let b = broker();
    let mut bin = dead("orders", 0, 99, None, "malformed", "junk", NOW);
    bin.value = Some(vec![0xff, 0xfe, 0x00].into());
    b.produce(bin).unwrap();
    let mut out = Vec::new();
    let n = export(
        &mut *b.reader().unwrap(),
        "g-dlt",
        &ExportArgs::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 7);
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0]["key"], "k-1");
    assert_eq!(lines[0]["key_encoding"], "utf8");
    assert_eq!(lines[0]["retry"]["dead_reason"], "rejected");
    assert_eq!(lines[0]["retry"]["origin_partition"], 0);
    assert_eq!(lines[0]["retry"]["attempts"], 2);
    assert_eq!(lines[0]["headers"][0]["key"], "trace");
    assert_eq!(lines[3]["key"], Value::Null);
    assert_eq!(lines[6]["value"], "//4A");
    assert_eq!(lines[6]["value_encoding"], "base64");
}

#[test]
fn replay_filters_resets_headers_and_dedups() {
    let b = broker();
    let args = ReplayArgs {
        filter: FilterArgs {
            reason: vec!["rejected".into()],
            key_regex: Some("k-.".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = run_replay(&b, args.clone()).unwrap();
    // k-1 (twice: one is a duplicate), k-2, k-4; x-3 is expired.
    assert_eq!(
        (r.matched, r.duplicates, r.replayed, r.parked),
        (4, 1, 3, 0)
    );
    let orders = all(&b, "orders");
    assert_eq!(orders.len(), 3);
    let k1 = orders
        .iter()
        .find(|r| r.key.as_deref() == Some(b"k-1"))
        .unwrap();
    assert_eq!(k1.partition, 0, "replayed to its origin partition");
    assert_eq!(header(k1, kafka_retry::REPLAYED_FROM), Some("g-dlt/0/0"));
    assert_eq!(header(k1, kafka_retry::REPLAY_COUNT), Some("1"));
    assert_eq!(header(k1, "trace"), Some("t-10"));
    assert_eq!(k1.value.as_deref(), Some(&b"value-10"[..]));
    for h in [
        kafka_retry::DEAD_REASON,
        kafka_retry::ATTEMPTS,
        kafka_retry::ORIGIN_TOPIC,
        kafka_retry::GROUP,
    ] {
        assert!(k1.header(h).is_none(), "{h} reset");
    }
    // The same command again replays nothing.
    let again = run_replay(&b, args).unwrap();
    assert_eq!(
        (again.already_replayed, again.duplicates, again.replayed),
        (3, 1, 0)
    );
    assert_eq!(all(&b, "orders").len(), 3);
    // Other filters: time window and exact key, with a limit.
    let r = run_replay(
        &b,
        ReplayArgs {
            filter: FilterArgs {
                since: Some("2025-12-02T18:02:00Z".into()),
                until: Some("2025-12-02T18:03:30Z".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.replayed, 2, "x-3 at 18:02 and the payments one at 18:03");
    assert_eq!(all(&b, "payments").len(), 1);
    let r = run_replay(
        &b,
        ReplayArgs {
            filter: FilterArgs {
                key: Some("nope".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.matched, 0);
}

#[test]
fn dry_run_writes_nothing() {
    let b = broker();
    let mut out = Vec::new();
    let r = replay(
        &b,
        "g-dlt",
        &ReplayArgs {
            dry_run: true,
            filter: FilterArgs {
                limit: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
        ProgressMode::Off,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((r.replayed, r.over_limit), (2, 3), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("would replay g-dlt/0/"))
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("dry run: would replay 2"), "{text}");
    assert!(all(&b, "orders").is_empty());
    assert_eq!(
        b.partition_count("g-dlt-replayed").unwrap(),
        None,
        "no ledger created"
    );
}

#[test]
fn over_max_replays_goes_to_the_parking_topic() {
    let b = broker();
    let mut r = dead("orders", 0, 50, Some("k-9"), "rejected", "again", NOW);
    r.headers.push(Header::new(kafka_retry::REPLAY_COUNT, "2"));
    b.produce(r).unwrap();
    let rep = run_replay(
        &b,
        ReplayArgs {
            max_replays: 2,
            filter: FilterArgs {
                key: Some("k-9".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((rep.replayed, rep.parked), (0, 1));
    assert!(all(&b, "orders").is_empty());
    let parked = all(&b, "g-dlt-parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(
        header(&parked[0], kafka_retry::DEAD_REASON),
        Some("rejected"),
        "parked as it was"
    );
    assert_eq!(
        header(&parked[0], kafka_retry::REPLAYED_FROM),
        Some("g-dlt/0/6")
    );
    // Below the limit it is replayed, counting on.
    let b = broker();
    let mut r = dead("orders", 0, 50, Some("k-9"), "rejected", "again", NOW);
    r.headers.push(Header::new(kafka_retry::REPLAY_COUNT, "1"));
    b.produce(r).unwrap();
    run_replay(
        &b,
        ReplayArgs {
            max_replays: 2,
            filter: FilterArgs {
                key: Some("k-9".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        header(&all(&b, "orders")[0], kafka_retry::REPLAY_COUNT),
        Some("2")
    );
}

/// A run killed between its ledger writes: one pending replay whose copy
/// was written, one whose copy was not. The next run finishes both, each
/// copy exactly once.
#[test]
fn a_rerun_finishes_pending_replays_exactly_once() {
    let b = broker();
    b.create_topic("g-dlt-replayed", 1).unwrap();
    let pending = |dlt_offset: i64, origin: &str, partition: i32, from: i64| {
        OutRecord::new("g-dlt-replayed")
            .key(format!("g-dlt/0/{dlt_offset}"))
            .value(format!(
                r#"{{"state":"pending","origin":"{origin}","to":"orders","partition":{partition},"from":{from},"offset":null,"count":1,"parked":false,"at":0}}"#
            ))
    };
    // g-dlt/0/0 (orders/0/10): copy written after the pending entry.
    b.produce(pending(0, "orders/0/10", 0, 0)).unwrap();
    b.produce(
        OutRecord::new("orders")
            .partition(0)
            .key("k-1")
            .header(kafka_retry::REPLAYED_FROM, "g-dlt/0/0"),
    )
    .unwrap();
    // g-dlt/0/1 (orders/1/11): killed before its copy was sent.
    b.produce(pending(1, "orders/1/11", 1, 0)).unwrap();
    let r = run_replay(
        &b,
        ReplayArgs {
            filter: FilterArgs {
                reason: vec!["rejected".into()],
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((r.recovered_found, r.recovered_sent), (1, 1));
    // Newly selected: k-4 only (k-1's duplicate is a duplicate of a ledgered origin).
    assert_eq!((r.already_replayed, r.duplicates, r.replayed), (2, 1, 1));
    let orders = all(&b, "orders");
    for from in ["g-dlt/0/0", "g-dlt/0/1", "g-dlt/0/5"] {
        let n = orders
            .iter()
            .filter(|r| header(r, kafka_retry::REPLAYED_FROM) == Some(from))
            .count();
        assert_eq!(n, 1, "{from} replayed once");
    }
    assert_eq!(orders.len(), 3);
}

#[test]
fn bad_input_is_a_clear_failure_and_writes_nothing() {
    let b = broker();
    let fail = |args: ReplayArgs| run_replay(&b, args).unwrap_err();
    let e = fail(ReplayArgs {
        filter: FilterArgs {
            since: Some("yesterday".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(e.code, 2);
    assert!(e.message.contains("--since `yesterday`"), "{e}");
    let e = fail(ReplayArgs {
        filter: FilterArgs {
            key_regex: Some("(".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    assert!(e.message.contains("--key-regex"), "{e}");
    let e = fail(ReplayArgs {
        filter: FilterArgs {
            reason: vec!["bored".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    assert!(e.message.contains("not a dead reason"), "{e}");
    let e = fail(ReplayArgs {
        rate: Some("fast".into()),
        ..Default::default()
    });
    assert!(e.message.contains("--rate"), "{e}");
    let e = fail(ReplayArgs {
        to: Some("missing".into()),
        ..Default::default()
    });
    assert!(e.message.contains("`missing` does not exist"), "{e}");
    let e = replay(
        &b,
        "nope-dlt",
        &ReplayArgs::default(),
        ProgressMode::Off,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(e.message.contains("`nope-dlt` does not exist"), "{e}");
    let e = summary(
        &mut *b.reader().unwrap(),
        "nope-dlt",
        &SummaryArgs::default(),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e.code, 1);
    // A dead letter with broken origin headers among the selection: nothing is replayed.
    let mut broken = dead("orders", 0, 1, Some("k-b"), "malformed", "junk", NOW);
    broken
        .headers
        .retain(|h| &h.key[..] != kafka_retry::ORIGIN_TOPIC.as_bytes());
    b.produce(broken).unwrap();
    let e = fail(ReplayArgs::default());
    assert!(
        e.message
            .contains("1 selected dead letters cannot be replayed, so nothing was replayed"),
        "{e}"
    );
    assert!(e.message.contains("g-dlt/0/6"), "{e}");
    assert!(all(&b, "orders").is_empty() && all(&b, "payments").is_empty());
    // ... and with --to it can be.
    b.create_topic("fixed", 1).unwrap();
    let r = run_replay(
        &b,
        ReplayArgs {
            to: Some("fixed".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.replayed, 6);
    assert_eq!(all(&b, "fixed").len(), 6);
}

#[test]
fn retry_status_counts_parked_records_past_the_relays_commit() {
    let b = MemoryBroker::new();
    b.create_topic("g-retry", 2).unwrap();
    let now = kafka_retry_now();
    for (p, enq, due) in [
        (0, now - 60_000, None),
        (0, now - 1000, None),
        (0, now, Some(now + 3_600_000 * 2)),
        (1, now, None),
    ] {
        let mut r = OutRecord::new("g-retry").partition(p).value("v");
        r.headers = vec![
            Header::new(kafka_retry::FIRST_RECEIVED_AT, (enq - 5000).to_string()),
            Header::new(kafka_retry::ENQUEUED_AT, enq.to_string()),
        ];
        if let Some(d) = due {
            r.headers
                .push(Header::new(kafka_retry::DUE_AT, d.to_string()));
        }
        b.produce(r).unwrap();
    }
    // The relay group committed past the first record of partition 0.
    let mut c = b
        .consumer(ConsumerConfig::new("g-relay", ["g-retry"]))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.assignment().is_empty() && Instant::now() < deadline {
        let _ = matches!(
            c.poll(Duration::from_millis(50)).unwrap(),
            ConsumerEvent::Assigned(_)
        );
    }
    c.commit(&[(TopicPartition::new("g-retry", 0), 1)]).unwrap();
    let mut out = Vec::new();
    status(
        &mut *b.reader().unwrap(),
        "g-retry",
        "g-relay",
        &StatusArgs {
            interval: "5s".into(),
            json: true,
        },
        &mut out,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["parked"], 3);
    assert_eq!(v["partitions"][0]["committed"], 1);
    assert_eq!(v["partitions"][0]["parked"], 2);
    assert_eq!(v["partitions"][1]["committed"], Value::Null);
    assert_eq!(v["partitions"][1]["parked"], 1);
    let bucket = |l: &str| {
        v["due"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["bucket"] == l)
            .unwrap()["count"]
            .as_u64()
            .unwrap()
    };
    // now-1000+5s: due in 4 s; now+5s: due in 5 s; the due-at one in 2 h.
    assert_eq!(
        (bucket("overdue"), bucket("< 10s"), bucket("< 1d")),
        (0, 2, 1)
    );
    let mut out = Vec::new();
    status(
        &mut *b.reader().unwrap(),
        "g-retry",
        "g-relay",
        &StatusArgs {
            interval: "5s".into(),
            json: false,
        },
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("g-retry, relay group g-relay: 3 parked"),
        "{text}"
    );
    let e = status(
        &mut *b.reader().unwrap(),
        "nope",
        "g-relay",
        &StatusArgs {
            interval: "5s".into(),
            json: false,
        },
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(e.message.contains("`nope` does not exist"), "{e}");
}

fn kafka_retry_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The whole loop on the memory broker: an engine dead-letters, the CLI
/// replays, a fixed engine handles every replayed record once.
#[test]
fn replayed_records_are_handled_by_an_engine() {
    let b = MemoryBroker::new();
    b.create_topic("orders", 2).unwrap();
    let engine = Engine::builder(b.clone())
        .group_id("g")
        .topics(["orders"])
        .handler(|_r: &Record| Outcome::reject("downstream says no"))
        .build()
        .unwrap();
    for i in 0..20 {
        b.produce(
            OutRecord::new("orders")
                .key(format!("k-{i}"))
                .value(format!("v-{i}")),
        )
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while all(&b, "g-dlt").len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(all(&b, "g-dlt").len(), 20);
    let r = run_replay(&b, ReplayArgs::default()).unwrap();
    assert_eq!(r.replayed, 20);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let engine = Engine::builder(b.clone())
        .group_id("g")
        .topics(["orders"])
        .handler(move |r: &Record| {
            if r.header(kafka_retry::REPLAYED_FROM).is_some() {
                s.lock().unwrap().push(
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                );
            }
            Outcome::Done
        })
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.shutdown(Duration::from_secs(5)).unwrap();
    let mut keys = seen.lock().unwrap().clone();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20);
}

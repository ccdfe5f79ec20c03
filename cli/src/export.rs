//! `kafka-retry dlt export --format jsonl`: one JSON object per dead letter.

use std::io::Write;

use base64::Engine as _;
use kafka_retry::transport::Reader;
use serde_json::{json, Map, Value};

use crate::args::ExportArgs;
use crate::dead::{scan, DeadLetter};
use crate::error::Result;
use crate::filter::Filter;
use crate::time::now_ms;

/// Bytes as `{"<name>": "...", "<name>_encoding": "utf8"|"base64"}` fields.
pub fn bytes_fields(map: &mut Map<String, Value>, name: &str, b: Option<&[u8]>) {
    let (v, enc) = match b {
        None => (Value::Null, Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Value::from(s), Value::from("utf8")),
            Err(_) => (
                Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
                Value::from("base64"),
            ),
        },
    };
    map.insert(name.to_string(), v);
    map.insert(format!("{name}_encoding"), enc);
}

/// The JSON object of one dead letter.
pub fn to_json(d: &DeadLetter) -> Value {
    let r = &d.record;
    let mut m = Map::new();
    m.insert("topic".into(), json!(r.topic.as_str()));
    m.insert("partition".into(), json!(r.partition));
    m.insert("offset".into(), json!(r.offset));
    m.insert("timestamp".into(), json!(r.timestamp));
    bytes_fields(&mut m, "key", r.key.as_deref());
    bytes_fields(&mut m, "value", r.value.as_deref());
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let mut hm = Map::new();
            bytes_fields(&mut hm, "key", Some(&h.key));
            bytes_fields(&mut hm, "value", h.value.as_deref());
            Value::Object(hm)
        })
        .collect();
    m.insert("headers".into(), Value::Array(headers));
    m.insert(
        "retry".into(),
        json!({
            "dead_reason": d.dead_reason,
            "reason": d.reason,
            "dead_lettered_at": d.dead_lettered_at,
            "origin_topic": d.origin.as_ref().map(|o| &o.0),
            "origin_partition": d.origin.as_ref().map(|o| o.1),
            "origin_offset": d.origin.as_ref().map(|o| o.2),
            "group": header_text(d, kafka_retry::GROUP),
            "attempts": header_text(d, kafka_retry::ATTEMPTS).and_then(|s| s.parse::<u64>().ok()),
            "first_received_at": header_text(d, kafka_retry::FIRST_RECEIVED_AT).and_then(|s| s.parse::<i64>().ok()),
            "replay_count": d.replay_count,
            "replayed_from": header_text(d, kafka_retry::REPLAYED_FROM),
            "problems": d.problems,
        }),
    );
    Value::Object(m)
}

fn header_text(d: &DeadLetter, name: &str) -> Option<String> {
    let v = d.record.header(name)?.value.as_deref()?;
    std::str::from_utf8(v).ok().map(str::to_string)
}

/// Writes every dead letter of `dlt` passing the filters as one JSON line.
/// Returns how many were written.
pub fn export(
    reader: &mut dyn Reader,
    dlt: &str,
    args: &ExportArgs,
    out: &mut dyn Write,
) -> Result<usize> {
    let filter = Filter::new(&args.filter, now_ms())?;
    let mut n = 0;
    scan(reader, dlt, |r| {
        if filter.limit.is_some_and(|l| n >= l) {
            return Ok(());
        }
        let d = DeadLetter::new(r);
        if filter.matches(&d) {
            writeln!(out, "{}", to_json(&d))?;
            n += 1;
        }
        Ok(())
    })?;
    Ok(n)
}

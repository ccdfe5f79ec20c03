//! The retry path's per-record header work, timed alone: what a worker
//! spends writing a retried record's `retry.*` headers, and what the relay
//! (and a worker, on a redelivered record) spends parsing them. Prints
//! numbers; it is not a test.
//!
//! Run: `cargo run --release --features fuzzing --example bench_engine_headers`
//! (the header code is reached through the crate's `unstable` module,
//! which only the `fuzzing` feature builds). `BENCH_N` (default 1,000,000)
//! sets the iterations.

#[cfg(feature = "fuzzing")]
fn main() {
    use std::hint::black_box;
    use std::time::Instant;

    use kafka_retry::unstable::headers::{parse, write, RetryInfo};
    use kafka_retry::{Header, Record};

    let n: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1_000_000)
        .max(1);
    let now = 1_700_000_000_000_i64;
    let info = RetryInfo {
        origin_topic: "bench-engine-orders".into(),
        origin_partition: 3,
        origin_offset: 123_456,
        first_received_at: now - 5_000,
        enqueued_at: now - 100,
        attempts: 1,
        due_at: None,
    };
    let user = [Header::new("trace-id", "0123456789abcdef")];
    let headers = write(&info, &user, "bench", None);
    let record = Record {
        topic: "g-retry".into(),
        partition: 3,
        offset: 7,
        timestamp: now,
        key: None,
        value: None,
        headers: headers.clone(),
    };
    println!(
        "bench_engine_headers: {} headers per record (1 user header + the retry headers), {n} iterations",
        headers.len()
    );
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(write(black_box(&info), black_box(&user), "bench", None));
        }
        let write_ns = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let _ = black_box(parse(black_box(&record), now));
        }
        let parse_ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("round {round}: write {write_ns:.0} ns/record, parse {parse_ns:.0} ns/record");
    }
}

#[cfg(not(feature = "fuzzing"))]
fn main() {
    eprintln!("bench_engine_headers needs `--features fuzzing` (see the top of the file)");
}

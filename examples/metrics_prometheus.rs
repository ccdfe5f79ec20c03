//! The engine's metrics as Prometheus text over HTTP, with synchronous code
//! and no Kafka: an engine on the memory broker handles a stream of orders
//! (most done, some retried, a few rejected), a small recorder
//! (examples/shared/prometheus.rs) renders the Prometheus text, and a
//! `std::net::TcpListener` loop serves it on `/metrics`. Any `metrics`
//! recorder works the same way (`metrics-exporter-prometheus` with its
//! default features off is one; it needs a newer Rust than this crate).
//!
//! Run: `cargo run --example metrics_prometheus --features metrics` and
//! `curl http://127.0.0.1:9898/metrics`; `-- --once` prints one scrape
//! after a few seconds and exits; `-- --port N` picks the port.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use kafka_retry::{DeadLetterLimit, Engine, MemoryBroker, OutRecord, Outcome, RetryPolicy};

#[path = "shared/prometheus.rs"]
mod prometheus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().collect();
    let once = args.iter().any(|a| a == "--once");
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(9898);

    // The recorder first: the engine registers its metrics in build().
    let prometheus = prometheus::TextRecorder::install();

    let broker = MemoryBroker::new();
    broker.create_topic("orders", 2)?;
    let engine = Engine::builder(broker.clone())
        .group_id("billing")
        .topics(["orders"])
        .policy(RetryPolicy::new(
            Duration::from_millis(200),
            Duration::from_secs(30),
        ))
        .dead_letter_limit(DeadLetterLimit::new(1000, Duration::from_secs(60)))
        .handler(|r| match r.value.as_deref() {
            Some(v) if v.ends_with(b"7") => Outcome::reject("bad order"),
            Some(v) if v.ends_with(b"3") && r.attempts() == 0 => Outcome::retry("not created yet"),
            _ => {
                std::thread::sleep(Duration::from_micros(200));
                Outcome::Done
            }
        })
        .build()?;

    // A trickle of orders, forever.
    let producer = broker.clone();
    std::thread::spawn(move || {
        for i in 0u64.. {
            let order = OutRecord::new("orders")
                .key(format!("customer-{}", i % 50))
                .value(format!("order-{i}"));
            if producer.produce(order).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });

    if once {
        std::thread::sleep(Duration::from_secs(3));
        print!("{}", prometheus.render());
        println!("# health: {}", engine.health());
        engine.shutdown(Duration::from_secs(5))?;
        return Ok(());
    }

    let listener = TcpListener::bind(("127.0.0.1", port))?;
    eprintln!("serving http://127.0.0.1:{port}/metrics (and /health); Ctrl-C to stop");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request_line = String::new();
        if BufReader::new(&stream)
            .read_line(&mut request_line)
            .is_err()
        {
            continue;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/metrics" => ("200 OK", prometheus.render()),
            "/health" => {
                let h = engine.health();
                let code = if h.is_healthy() {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                (code, format!("{h}\n"))
            }
            _ => ("404 Not Found", "try /metrics or /health\n".to_string()),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

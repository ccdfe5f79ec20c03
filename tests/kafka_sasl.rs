//! SASL against independent software: our client and engine through the
//! TLS/SASL front end (`tests/common/secure.rs`, a Python proxy using
//! `scramp` for SCRAM) in front of Tansu, over SASL_PLAINTEXT (the SASL_SSL
//! variants come with the TLS work).
//!
//! Every test also checks that the password never reached a log line: the
//! binary installs a logger that keeps every record (all levels).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_retry::transport::{Consumer, ConsumerConfig, ConsumerEvent, Producer, Transport};
use kafka_retry::{
    Engine, Error, KafkaConfig, KafkaTransport, OutRecord, Outcome, RetryPolicy, Sasl,
    SaslMechanism, SecurityProtocol, Token, TokenProvider, UnsecuredJwt,
};

use common::secure::{unsecured_jwt, FrontOptions, SecureFront, PASSWORD, USER};
use common::unique;

// ---------------------------------------------------------------------------
// A logger that keeps everything, to prove no secret is ever logged.

struct Capture(Mutex<String>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!(
            "{} {}: {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&line);
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let logger: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(String::new()))));
        log::set_logger(logger).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        logger
    })
}

/// Panics if any log line so far holds a secret.
fn assert_no_secret_logged(secrets: &[&str]) {
    let text = logs().0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for s in secrets {
        assert!(!text.contains(s), "a secret reached the logs:\n{text}");
    }
}

// ---------------------------------------------------------------------------

fn front(opts: FrontOptions) -> SecureFront {
    logs();
    SecureFront::start(FrontOptions {
        tls: false,
        sasl: true,
        ..opts
    })
}

fn config(front: &SecureFront, sasl: Sasl) -> KafkaConfig {
    KafkaConfig::new(&front.bootstrap)
        .security_protocol(SecurityProtocol::SaslPlaintext)
        .sasl(sasl)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(200))
}

fn connect(front: &SecureFront, sasl: Sasl) -> KafkaTransport {
    KafkaTransport::connect(config(front, sasl)).expect("connect through the front end")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn group_consumer(kafka: &KafkaTransport, topic: &str) -> Box<dyn Consumer> {
    let mut c = ConsumerConfig::new(unique("sasl-g"), [topic]);
    c.session_timeout = Duration::from_secs(2);
    c.rebalance_timeout = Duration::from_secs(10);
    kafka.consumer(c).expect("consumer")
}

/// Polls `consumer` until `n` distinct values were read (or 30 s passed);
/// any poll error fails the test.
fn read_values(consumer: &mut dyn Consumer, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < n && Instant::now() < deadline {
        if let ConsumerEvent::Records(rs) = consumer.poll(Duration::from_millis(500)).expect("poll")
        {
            for r in rs {
                seen.insert(String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into());
            }
        }
    }
    seen
}

/// Produces `n` records and reads them back with a group consumer.
fn round_trip(kafka: &KafkaTransport, front: &SecureFront, tag: &str, n: usize) {
    let topic = unique(&format!("sasl-{tag}"));
    front.create_topic(&topic, 2);
    let producer = kafka.producer().unwrap();
    let records = (0..n)
        .map(|i| {
            OutRecord::new(&topic)
                .key(format!("k{i}"))
                .value(format!("{tag}-{i}"))
        })
        .collect();
    for r in producer.send_batch(records) {
        r.expect("produce");
    }
    let mut consumer = group_consumer(kafka, &topic);
    let seen = read_values(&mut *consumer, n);
    let want: BTreeSet<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    assert_eq!(seen, want, "{tag}");
    consumer.close().unwrap();
}

#[test]
fn smoke() {
    let front = front(FrontOptions::default());
    let kafka = connect(&front, Sasl::plain(USER, PASSWORD));
    round_trip(&kafka, &front, "plain", 20);
    assert!(
        front.authentications() >= 2,
        "bootstrap and more connections"
    );
    assert_eq!(front.refused(), 0);
    assert_no_secret_logged(&[PASSWORD]);
}

#[test]
fn every_mechanism_produces_and_consumes() {
    let front = front(FrontOptions::default());
    let jwt = UnsecuredJwt::new(USER).extension("traceId", "42");
    let mechanisms = [
        ("scram256", Sasl::scram_sha256(USER, PASSWORD)),
        ("scram512", Sasl::scram_sha512(USER, PASSWORD)),
        ("oauth", Sasl::oauthbearer(jwt)),
        (
            "by-name",
            Sasl::with_password(SaslMechanism::ScramSha512, USER, PASSWORD).unwrap(),
        ),
    ];
    for (tag, sasl) in mechanisms {
        let before = front.authentications();
        let kafka = connect(&front, sasl);
        round_trip(&kafka, &front, tag, 10);
        assert!(front.authentications() > before, "{tag}");
    }
    assert_eq!(front.refused(), 0);
    assert_no_secret_logged(&[PASSWORD]);
}

/// A provider handing out one fixed token.
struct Fixed(String);

impl std::fmt::Debug for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fixed(..)")
    }
}

impl TokenProvider for Fixed {
    fn token(&self) -> kafka_retry::Result<Token> {
        Ok(Token {
            value: self.0.clone(),
            expires_at: SystemTime::now() + Duration::from_secs(600),
            extensions: Vec::new(),
        })
    }
}

/// Connecting with `sasl` fails with `Error::Auth` within the connect
/// timeout, after one connection (no retry storm), naming the mechanism and
/// the broker, with no secret in `Display` or `Debug`.
fn refused(front: &SecureFront, sasl: Sasl, secret: &str) -> String {
    let mechanism = sasl.mechanism();
    let before = front.connections();
    let start = Instant::now();
    let err = KafkaTransport::connect(config(front, sasl)).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!err.is_retriable());
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(shown.contains(mechanism.as_str()), "{shown}");
    assert!(shown.contains(&front.bootstrap), "{shown}");
    assert!(
        !shown.contains(secret) && !debug.contains(secret),
        "{shown} / {debug}"
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        front.connections() - before,
        1,
        "one attempt, no reconnects"
    );
    eprintln!("{shown}");
    shown
}

#[test]
fn wrong_credentials_are_refused_with_the_brokers_message() {
    let front = front(FrontOptions::default());
    let wrong = "not-the-password";
    for sasl in [
        Sasl::plain(USER, wrong),
        Sasl::scram_sha256(USER, wrong),
        Sasl::scram_sha512(USER, wrong),
        Sasl::scram_sha512("mallory", wrong),
    ] {
        let err = refused(&front, sasl, wrong);
        assert!(err.contains("SASL_AUTHENTICATION_FAILED"), "{err}");
    }
    // An expired token: the broker's reason is in the message.
    let expired = unsecured_jwt(USER, now_secs() - 60);
    let err = refused(&front, Sasl::oauthbearer(Fixed(expired.clone())), &expired);
    assert!(err.contains("expired"), "{err}");
    assert!(front.refused() >= 5);
    assert_no_secret_logged(&[wrong, &expired, PASSWORD]);
}

#[test]
fn a_scram_server_that_cannot_prove_itself_is_refused() {
    let front = front(FrontOptions {
        bad_server_signature: true,
        ..FrontOptions::default()
    });
    let err = refused(&front, Sasl::scram_sha256(USER, PASSWORD), PASSWORD);
    assert!(err.contains("does not verify"), "{err}");

    // `e=` in server-final with Kafka error code 0.
    let front = self::front(FrontOptions {
        server_final_error: true,
        ..FrontOptions::default()
    });
    let err = refused(&front, Sasl::scram_sha512(USER, PASSWORD), PASSWORD);
    assert!(err.contains("invalid-proof"), "{err}");
    assert_no_secret_logged(&[PASSWORD]);
}

/// KIP-368 with a 2 s session: ~10 s of pipelined produce and group
/// consumption (fetch, heartbeats, commits) re-authenticate every
/// connection in time: nothing lost, no error, no connection closed for an
/// expired session.
#[test]
fn reauthentication_keeps_a_long_run_going() {
    let front = front(FrontOptions {
        session_lifetime: Some(Duration::from_secs(2)),
        ..FrontOptions::default()
    });
    let kafka = connect(&front, Sasl::scram_sha512(USER, PASSWORD));
    let topic = unique("sasl-reauth");
    front.create_topic(&topic, 3);
    let mut consumer = group_consumer(&kafka, &topic);
    let producer: Arc<dyn Producer> = kafka.producer().unwrap();

    // Four writers at once: several Produce requests in flight on the
    // producer's connection when its re-authentication falls due.
    let mut writer = Some({
        let (producer, topic) = (producer.clone(), topic.clone());
        thread::spawn(move || {
            thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|w| {
                        let (producer, topic) = (&producer, &topic);
                        scope.spawn(move || {
                            let mut sent = Vec::new();
                            let start = Instant::now();
                            while start.elapsed() < Duration::from_secs(10) {
                                let batch: Vec<OutRecord> = (sent.len()..sent.len() + 20)
                                    .map(|i| {
                                        OutRecord::new(topic)
                                            .key(format!("k{}", i % 7))
                                            .value(format!("v{w}-{i}"))
                                    })
                                    .collect();
                                for r in producer.send_batch(batch.clone()) {
                                    r.expect("produce during re-authentication");
                                }
                                sent.extend(batch.iter().map(|r| {
                                    String::from_utf8_lossy(r.value.as_deref().unwrap())
                                        .into_owned()
                                }));
                                thread::sleep(Duration::from_millis(20));
                            }
                            sent
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("writer"))
                    .collect::<BTreeSet<String>>()
            })
        })
    });
    let mut seen = BTreeSet::new();
    let mut total = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if writer.as_ref().is_some_and(|w| w.is_finished()) {
            total = writer.take().map(|w| w.join().expect("writer"));
        }
        if total
            .as_ref()
            .is_some_and(|t: &BTreeSet<String>| seen.len() >= t.len())
        {
            break;
        }
        if let ConsumerEvent::Records(rs) = consumer.poll(Duration::from_millis(300)).expect("poll")
        {
            for r in rs {
                seen.insert(
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into_owned(),
                );
            }
        }
    }
    let want = total.expect("writer finished");
    eprintln!(
        "{} records, {} re-authentications",
        want.len(),
        front.reauthentications()
    );
    assert_eq!(seen.len(), want.len(), "records lost or extra");
    assert_eq!(seen, want);
    consumer.close().unwrap();
    assert!(
        front.reauthentications() > 0,
        "no re-authentication in 10 s of 2 s sessions"
    );
    assert_eq!(front.expired(), 0, "a connection outlived its session");
    assert_eq!(front.refused(), 0);
    assert_no_secret_logged(&[PASSWORD]);
}

/// Counts calls; tokens live `life`.
#[derive(Debug)]
struct Counting {
    calls: AtomicU32,
    life: Duration,
    /// After this is set, every token is already expired.
    expire: AtomicBool,
    /// Every token handed out (secrets: never to be logged).
    issued: Mutex<Vec<String>>,
}

impl Counting {
    fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }
}

impl TokenProvider for Counting {
    fn token(&self) -> kafka_retry::Result<Token> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = if self.expire.load(Ordering::SeqCst) {
            Token {
                value: unsecured_jwt(USER, now_secs() - 60),
                expires_at: SystemTime::now() - Duration::from_secs(60),
                extensions: Vec::new(),
            }
        } else {
            UnsecuredJwt::new(USER).lifetime(self.life).token()?
        };
        self.issued.lock().unwrap().push(token.value.clone());
        Ok(token)
    }
}

/// The token provider is asked again before the token expires; the broker
/// caps the session at the token's expiry and re-authentication carries
/// the new token.
#[derive(Debug, Clone)]
struct Shared(Arc<Counting>);

impl TokenProvider for Shared {
    fn token(&self) -> kafka_retry::Result<Token> {
        self.0.token()
    }
}

fn counting(life: Duration) -> Arc<Counting> {
    Arc::new(Counting {
        calls: AtomicU32::new(0),
        life,
        expire: AtomicBool::new(false),
        issued: Mutex::new(Vec::new()),
    })
}

#[test]
fn oauthbearer_tokens_are_refreshed_before_they_expire() {
    let front = front(FrontOptions {
        session_lifetime: Some(Duration::from_secs(60)),
        ..FrontOptions::default()
    });
    let provider = counting(Duration::from_secs(3));
    let kafka = connect(&front, Sasl::oauthbearer(Shared(provider.clone())));
    let topic = unique("sasl-token");
    front.create_topic(&topic, 1);
    let producer = kafka.producer().unwrap();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(8) {
        producer
            .send(OutRecord::new(&topic).value(format!("t{i}")))
            .expect("produce across token refreshes");
        i += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let calls = provider.calls.load(Ordering::SeqCst);
    assert!(
        calls >= 3,
        "provider called {calls} times in 8 s of 3 s tokens"
    );
    assert!(front.reauthentications() > 0);
    assert_eq!(front.expired(), 0);
    assert_eq!(front.refused(), 0);
    let tokens = provider.issued();
    assert_no_secret_logged(&tokens.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A running engine whose credentials stop working (the token provider
/// starts handing out expired tokens): the failure is counted and logged
/// as an error, and the engine backs off instead of reconnecting in a
/// tight loop.
#[test]
fn a_running_engine_reports_refused_credentials_and_backs_off() {
    let front = front(FrontOptions {
        session_lifetime: Some(Duration::from_secs(2)),
        ..FrontOptions::default()
    });
    // Short tokens: the cache asks the provider again every ~2.4 s.
    let provider = counting(Duration::from_secs(3));
    let kafka = connect(&front, Sasl::oauthbearer(Shared(provider.clone())));
    let group = unique("sasl-engine");
    let topic = unique("sasl-engine-orders");
    front.create_topic(&topic, 1);
    front.create_topic(&format!("{group}-retry"), 1);
    front.create_topic(&format!("{group}-dlt"), 1);
    let engine = Engine::builder(kafka)
        .group_id(&group)
        .topics([topic.as_str()])
        .session_timeout(Duration::from_secs(2))
        .policy(RetryPolicy::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
        .handler(|_r| Outcome::Done)
        .build()
        .expect("engine");
    assert!(common::eventually(Duration::from_secs(20), || engine
        .stats()
        .assigned_partitions
        > 0));

    provider.expire.store(true, Ordering::SeqCst);
    // Sessions end within 2 s; re-authentication and reconnects fail.
    assert!(
        common::eventually(Duration::from_secs(15), || engine.stats().auth_failures > 0),
        "no auth failure counted: {:?}\n{}",
        engine.stats(),
        logs()
            .0
            .lock()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("TRACE")
                && !l.contains("kafka_retry::transport::kafka::producer"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let before = front.connections();
    thread::sleep(Duration::from_secs(4));
    let attempts = front.connections() - before;
    eprintln!("{attempts} connection attempts in 4 s after the refusal");
    // Two group consumers (origin, relay), each with a fetch/coordinator
    // connection and a heartbeat thread: a handful per second at most,
    // where a reconnect loop would make hundreds.
    assert!(attempts <= 30, "{attempts} connection attempts in 4 s");
    let logged = logs().0.lock().unwrap().clone();
    assert!(
        logged
            .lines()
            .any(|l| l.starts_with("ERROR") && l.contains("SASL OAUTHBEARER")),
        "no error log for the refusal"
    );
    let _ = engine.shutdown(Duration::from_secs(5));
    let tokens = provider.issued();
    assert_no_secret_logged(&tokens.iter().map(String::as_str).collect::<Vec<_>>());
    assert_no_secret_logged(&[PASSWORD]);
}

/// SASL configured against a listener without SASL (the plain Tansu): a
/// clear error within the connect timeout, not a hang.
#[test]
fn sasl_against_a_plaintext_listener_fails_clearly() {
    logs();
    let config = KafkaConfig::new(common::kafka_bootstrap())
        .security_protocol(SecurityProtocol::SaslPlaintext)
        .sasl(Sasl::scram_sha256(USER, PASSWORD))
        .connect_timeout(Duration::from_secs(3));
    let start = Instant::now();
    let err = KafkaTransport::connect(config).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let shown = err.to_string();
    assert!(!shown.contains(PASSWORD), "{shown}");
    if common::broker_is_tansu() {
        // Tansu 0.6 answers SaslHandshake with UNSUPPORTED_SASL_MECHANISM.
        assert!(matches!(err, Error::Auth { .. }), "{err:?}");
        assert!(
            shown.contains("UNSUPPORTED_SASL_MECHANISM") && shown.contains("it enables"),
            "{shown}"
        );
    }
}

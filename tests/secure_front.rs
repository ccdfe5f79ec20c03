//! The TLS / SASL front end (`tests/common/secure.rs`, `tests/py/secure_front.py`)
//! proved with independent software: confluent-kafka (librdkafka) produces and
//! consumes through it with every security protocol and mechanism our client
//! supports, is refused with a wrong password, a wrong CA or without a client
//! certificate, and keeps working across KIP-368 re-authentications.
//!
//! Each test starts its own front end (and Tansu), so they run in parallel.
//!
//! Needs the `kafka` feature (tests/common uses kafka-protocol): an empty
//! test binary without it.
#![cfg(feature = "kafka")]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use common::secure::{config_args, unsecured_jwt, FrontOptions, SecureFront, PASSWORD, USER};
use common::{peer_try_run, raw_kafka, unique, Peer, PeerClient, PeerRecord};

fn records(n: usize, tag: &str) -> Vec<PeerRecord> {
    (0..n)
        .map(|i| {
            PeerRecord::new(
                Some(format!("k{i}").as_bytes()),
                Some(format!("{tag}-{i}").as_bytes()),
            )
        })
        .collect()
}

fn values(recs: &[PeerRecord]) -> Vec<String> {
    let mut v: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    v.sort();
    v
}

/// peer.py `produce` with `config`; Ok(offsets) or Err(exit status + stderr).
fn try_produce(
    front: &SecureFront,
    topic: &str,
    recs: &[PeerRecord],
    config: &[String],
    extra: &[&str],
) -> Result<Vec<serde_json::Value>, String> {
    let mut args = vec!["produce", "--bootstrap", &front.bootstrap, "--topic", topic];
    args.extend(config_args(config));
    args.extend_from_slice(extra);
    let input: String = recs
        .iter()
        .map(|r| {
            format!(
                "{}\n",
                serde_json::json!({
                    "key": r.key.as_deref().map(common::b64_encode),
                    "value": r.value.as_deref().map(common::b64_encode),
                    "headers": [], "partition": null, "timestamp": null,
                })
            )
        })
        .collect();
    peer_try_run(&args, Some(input))
}

/// One record produced with `config` that must be refused; returns the
/// error text (exit status and stderr) for the caller's checks.
fn produce_refused(
    front: &SecureFront,
    topic: &str,
    config: &[String],
    extra: &[&str],
    why: &str,
) -> String {
    match try_produce(front, topic, &records(1, "x"), config, extra) {
        Ok(out) => panic!(
            "{why}: produced {out:?}\nfront end log:\n{}",
            front.log_text()
        ),
        Err(e) => e,
    }
}

/// peer.py consume as a member of group `g` (through FindCoordinator and the
/// advertised coordinator address). Tansu answers a JoinGroup after about half
/// the session timeout; librdkafka's default heartbeat interval (3 s) exceeds
/// this session timeout, and a rebalance would re-deliver records.
const GROUP_ARGS: [&str; 6] = [
    "--group",
    "g",
    "--session-timeout-ms",
    "2000",
    "--config",
    "heartbeat.interval.ms=500",
];

/// Produces 3 records and reads them back with librdkafka using `config`.
fn round_trip(front: &SecureFront, config: &[String]) {
    let topic = unique("secure-front");
    front.create_topic(&topic, 1);
    let recs = records(3, &topic);
    let out = try_produce(front, &topic, &recs, config, &["--timeout", "20"])
        .unwrap_or_else(|e| panic!("{e}\nfront end log:\n{}", front.log_text()));
    assert_eq!(out.len(), 3, "{out:?}");
    let peer = Peer::on(&front.bootstrap);
    let mut extra = config_args(config);
    extra.extend_from_slice(&GROUP_ARGS);
    let got = peer
        .try_consume(&topic, 3, Duration::from_secs(20), &extra)
        .unwrap_or_else(|e| panic!("{e}\nfront end log:\n{}", front.log_text()));
    assert_eq!(values(&got), values(&recs));
}

fn start(opts: FrontOptions) -> SecureFront {
    common::init_log();
    SecureFront::start(opts)
}

fn sasl_ssl(mechanism: &str) {
    let front = start(FrontOptions::default());
    let config = front.librdkafka_config("SASL_SSL", Some(mechanism));
    round_trip(&front, &config);
    assert!(front.connections() >= 1);
    assert!(
        front.authentications() >= 2,
        "producer and consumer each authenticated: {}",
        front.authentications()
    );
    assert_eq!(front.refused(), 0, "{}", front.log_text());
    assert_eq!(front.tls_failures(), 0, "{}", front.log_text());
}

#[test]
fn sasl_ssl_plain() {
    sasl_ssl("PLAIN");
}

#[test]
fn sasl_ssl_scram_sha_256() {
    sasl_ssl("SCRAM-SHA-256");
}

#[test]
fn sasl_ssl_scram_sha_512() {
    sasl_ssl("SCRAM-SHA-512");
}

#[test]
fn sasl_ssl_oauthbearer() {
    sasl_ssl("OAUTHBEARER");
}

#[test]
fn sasl_plaintext_scram_sha_512() {
    let front = start(FrontOptions {
        tls: false,
        ..FrontOptions::default()
    });
    let config = front.librdkafka_config("SASL_PLAINTEXT", Some("SCRAM-SHA-512"));
    round_trip(&front, &config);
    assert!(front.authentications() >= 2);
    assert_eq!(front.refused(), 0);
}

#[test]
fn ssl_only() {
    let front = start(FrontOptions {
        sasl: false,
        ..FrontOptions::default()
    });
    let config = front.librdkafka_config("SSL", None);
    round_trip(&front, &config);
    assert_eq!(front.authentications(), 0);
    assert_eq!(front.tls_failures(), 0);

    // A client that trusts another CA refuses the server's certificate.
    let topic = unique("secure-front-wrong-ca");
    front.create_topic(&topic, 1);
    let wrong = vec![
        "security.protocol=SSL".to_string(),
        format!("ssl.ca.location={}", front.certs.other_ca.display()),
    ];
    let err = produce_refused(
        &front,
        &topic,
        &wrong,
        &["--timeout", "3"],
        "a client trusting another CA must not get through",
    );
    assert!(
        err.contains("certificate verify failed") || err.contains("SSL handshake failed"),
        "{err}"
    );
    assert!(front.tls_failures() >= 1);
}

#[test]
fn ssl_with_client_certificate() {
    let front = start(FrontOptions {
        sasl: false,
        client_auth: true,
        ..FrontOptions::default()
    });
    let base = front.librdkafka_config("SSL", None);
    let with_key = |key: &std::path::Path| {
        let mut c = base.clone();
        c.push(format!(
            "ssl.certificate.location={}",
            front.certs.client_cert.display()
        ));
        c.push(format!("ssl.key.location={}", key.display()));
        c
    };
    // PKCS#8 and PKCS#1 forms of the same key.
    round_trip(&front, &with_key(&front.certs.client_key));
    round_trip(&front, &with_key(&front.certs.client_key_rsa));
    assert_eq!(front.tls_failures(), 0, "{}", front.log_text());

    // Without a client certificate the handshake fails.
    let topic = unique("secure-front-no-cert");
    front.create_topic(&topic, 1);
    produce_refused(
        &front,
        &topic,
        &base,
        &["--timeout", "3"],
        "no client certificate must be refused",
    );
    // With one signed by another CA too.
    let mut other = base.clone();
    other.push(format!(
        "ssl.certificate.location={}",
        front.certs.other_client_cert.display()
    ));
    other.push(format!(
        "ssl.key.location={}",
        front.certs.other_client_key.display()
    ));
    let before = front.tls_failures();
    produce_refused(
        &front,
        &topic,
        &other,
        &["--timeout", "3"],
        "a certificate from another CA must be refused",
    );
    assert!(front.tls_failures() > before);
}

#[test]
fn wrong_password_is_refused() {
    let front = start(FrontOptions::default());
    let topic = unique("secure-front-wrong-password");
    front.create_topic(&topic, 1);
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let config: Vec<String> = front
            .librdkafka_config("SASL_SSL", Some(mechanism))
            .into_iter()
            .map(|c| {
                if c.starts_with("sasl.password=") {
                    "sasl.password=not-the-password".to_string()
                } else {
                    c
                }
            })
            .collect();
        let err = produce_refused(
            &front,
            &topic,
            &config,
            &["--timeout", "10"],
            "a wrong password must be refused",
        );
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("SASL authentication error"), "{err}");
        assert!(err.contains("Authentication failed"), "{err}");
    }
    assert_eq!(front.authentications(), 0);
    assert!(front.refused() >= 2);
}

#[test]
fn expired_oauthbearer_token_is_refused() {
    let front = start(FrontOptions::default());
    let topic = unique("secure-front-expired-token");
    front.create_topic(&topic, 1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let config = vec![
        "security.protocol=SASL_SSL".to_string(),
        format!("ssl.ca.location={}", front.certs.ca.display()),
        "sasl.mechanism=OAUTHBEARER".to_string(),
    ];
    let expired = unsecured_jwt(USER, now - 60);
    let err = produce_refused(
        &front,
        &topic,
        &config,
        &["--timeout", "10", "--oauth-token", &expired],
        "an expired token must be refused",
    );
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("expired"), "{err}");
    assert_eq!(front.authentications(), 0);
    assert!(front.refused() >= 1);

    // The same path with a valid token works (our JWT builder is right).
    let valid = unsecured_jwt(USER, now + 600);
    try_produce(
        &front,
        &topic,
        &records(1, "x"),
        &config,
        &["--timeout", "10", "--oauth-token", &valid],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", front.log_text()));
    assert!(front.authentications() >= 1);
}

#[test]
fn librdkafka_reauthenticates_within_session_lifetime() {
    let front = start(FrontOptions {
        session_lifetime: Some(Duration::from_millis(2500)),
        ..FrontOptions::default()
    });
    let config = front.librdkafka_config("SASL_SSL", Some("SCRAM-SHA-256"));
    let topic = unique("secure-front-reauth");
    front.create_topic(&topic, 1);
    let recs = records(8, &topic);
    let started = Instant::now();
    // A consumer reading all along while a producer sends one record a second.
    let consumer = {
        let bootstrap = front.bootstrap.clone();
        let topic = topic.clone();
        let config = config.clone();
        std::thread::spawn(move || {
            let mut extra = config_args(&config);
            extra.extend_from_slice(&GROUP_ARGS);
            Peer::on(&bootstrap).try_consume(&topic, 8, Duration::from_secs(25), &extra)
        })
    };
    let out = try_produce(
        &front,
        &topic,
        &recs,
        &config,
        &["--timeout", "20", "--interval-ms", "1000"],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", front.log_text()));
    assert_eq!(out.len(), 8);
    assert!(started.elapsed() >= Duration::from_secs(7));
    let got = consumer
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", front.log_text()));
    assert_eq!(values(&got), values(&recs), "{}", front.log_text());
    assert!(
        front.reauthentications() > 0,
        "librdkafka re-authenticated: {}",
        front.log_text()
    );
    assert_eq!(front.expired(), 0, "{}", front.log_text());
    assert_eq!(front.refused(), 0);
}

// ---------------------------------------------------------------------------
// The front end's own rules, on a raw socket (SASL_PLAINTEXT).

fn raw_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn raw_request(api_key: i16, version: i16, corr: i32, body: &[u8]) -> Vec<u8> {
    let mut req = Vec::new();
    req.extend_from_slice(&api_key.to_be_bytes());
    req.extend_from_slice(&version.to_be_bytes());
    req.extend_from_slice(&corr.to_be_bytes());
    req.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    req.extend_from_slice(body);
    let mut out = (req.len() as u32).to_be_bytes().to_vec();
    out.extend(req);
    out
}

#[test]
fn requests_before_authentication_close_the_connection() {
    let front = start(FrontOptions {
        tls: false,
        ..FrontOptions::default()
    });
    let mut s = std::net::TcpStream::connect(&front.bootstrap).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // ApiVersions v0 is allowed and lists SaslHandshake and SaslAuthenticate.
    s.write_all(&raw_request(18, 0, 1, &[])).unwrap();
    let body = raw_frame(&mut s).expect("ApiVersions reply");
    assert_eq!(&body[0..4], &1i32.to_be_bytes());
    assert_eq!(&body[4..6], &0i16.to_be_bytes(), "error code");
    let n = i32::from_be_bytes(body[6..10].try_into().unwrap()) as usize;
    let keys: Vec<(i16, i16, i16)> = (0..n)
        .map(|i| {
            let e = &body[10 + 6 * i..16 + 6 * i];
            let g = |j: usize| i16::from_be_bytes([e[j], e[j + 1]]);
            (g(0), g(2), g(4))
        })
        .collect();
    assert!(keys.contains(&(17, 0, 1)), "{keys:?}");
    assert!(keys.contains(&(36, 0, 2)), "{keys:?}");
    // Metadata v1 (all topics) before authenticating: the connection closes.
    s.write_all(&raw_request(3, 1, 2, &(-1i32).to_be_bytes()))
        .unwrap();
    assert!(
        raw_frame(&mut s).is_none(),
        "no reply before authentication"
    );
    assert_eq!(front.connections(), 1);
}

/// SaslHandshake v1 for `mechanism` on a raw connection; asserts success.
fn raw_handshake(s: &mut std::net::TcpStream, corr: i32, mechanism: &'static str) {
    let req = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let resp: SaslHandshakeResponse =
        raw_kafka::call(s, ApiKey::SaslHandshake, 1, corr, "raw", &req);
    assert_eq!(resp.error_code, 0);
    let mechs: Vec<&str> = resp.mechanisms.iter().map(|m| &**m).collect();
    assert_eq!(
        mechs,
        ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
    );
}

/// SaslAuthenticate at `version` with a PLAIN token for `password`.
fn raw_plain(
    s: &mut std::net::TcpStream,
    version: i16,
    corr: i32,
    password: &str,
) -> SaslAuthenticateResponse {
    let token = format!("\0{USER}\0{password}");
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token.into_bytes()));
    raw_kafka::call(s, ApiKey::SaslAuthenticate, version, corr, "raw", &req)
}

/// The SASL exchange at every SaslAuthenticate version, checked with
/// kafka-protocol's decoder (v2 is the flexible one): session lifetime,
/// wrong password (58 + message, then closed), expiry and re-authentication.
#[test]
fn sasl_authenticate_versions_on_the_wire() {
    let front = start(FrontOptions {
        tls: false,
        session_lifetime: Some(Duration::from_millis(2000)),
        ..FrontOptions::default()
    });
    for version in 0..=2i16 {
        let mut s = raw_kafka::connect(&front.bootstrap);
        raw_handshake(&mut s, 1, "PLAIN");
        let resp = raw_plain(&mut s, version, 2, PASSWORD);
        assert_eq!(resp.error_code, 0, "v{version}: {resp:?}");
        assert_eq!(resp.error_message, None);
        let lifetime = if version >= 1 { 2000 } else { 0 };
        assert_eq!(resp.session_lifetime_ms, lifetime, "v{version}");

        let mut s = raw_kafka::connect(&front.bootstrap);
        raw_handshake(&mut s, 1, "PLAIN");
        let resp = raw_plain(&mut s, version, 2, "wrong");
        assert_eq!(resp.error_code, 58, "v{version}: {resp:?}");
        let msg = resp
            .error_message
            .map(|m| m.to_string())
            .unwrap_or_default();
        assert!(msg.contains("Invalid username or password"), "{msg}");
        assert!(raw_frame(&mut s).is_none(), "closed after a failed login");
    }
    assert_eq!(front.authentications(), 3);
    assert_eq!(front.refused(), 3);

    // SaslHandshake v0: the PLAIN token then travels unframed (a bare
    // length-prefixed token, answered by an empty one), as with Kafka.
    let mut s = raw_kafka::connect(&front.bootstrap);
    let req = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let resp: SaslHandshakeResponse =
        raw_kafka::call(&mut s, ApiKey::SaslHandshake, 0, 1, "raw", &req);
    assert_eq!(resp.error_code, 0);
    let token = format!("\0{USER}\0{PASSWORD}");
    s.write_all(&(token.len() as u32).to_be_bytes()).unwrap();
    s.write_all(token.as_bytes()).unwrap();
    assert_eq!(raw_frame(&mut s), Some(vec![]), "empty token: success");
    s.write_all(&raw_request(3, 1, 2, &(-1i32).to_be_bytes()))
        .unwrap();
    assert!(
        raw_frame(&mut s).is_some(),
        "Metadata after an unframed login"
    );
    assert_eq!(front.authentications(), 4);

    // Re-authenticating before the lifetime ends keeps the connection; a
    // request after it without re-authenticating closes it.
    let mut s = raw_kafka::connect(&front.bootstrap);
    raw_handshake(&mut s, 1, "PLAIN");
    assert_eq!(raw_plain(&mut s, 2, 2, PASSWORD).error_code, 0);
    std::thread::sleep(Duration::from_millis(1200));
    raw_handshake(&mut s, 3, "PLAIN");
    assert_eq!(raw_plain(&mut s, 2, 4, PASSWORD).error_code, 0);
    assert_eq!(front.reauthentications(), 1);
    std::thread::sleep(Duration::from_millis(1200));
    // Over 2 s after the first login, 1.2 s after the second: still served.
    s.write_all(&raw_request(3, 1, 5, &(-1i32).to_be_bytes()))
        .unwrap();
    assert!(raw_frame(&mut s).is_some(), "Metadata within the lifetime");
    std::thread::sleep(Duration::from_millis(1000));
    s.write_all(&raw_request(3, 1, 6, &(-1i32).to_be_bytes()))
        .unwrap();
    assert!(raw_frame(&mut s).is_none(), "closed after the lifetime");
    assert_eq!(front.expired(), 1);
}

#[test]
fn librdkafka_rejects_a_bad_scram_server_signature() {
    let front = start(FrontOptions {
        bad_server_signature: true,
        ..FrontOptions::default()
    });
    let topic = unique("secure-front-bad-signature");
    front.create_topic(&topic, 1);
    let config = front.librdkafka_config("SASL_SSL", Some("SCRAM-SHA-512"));
    let err = produce_refused(
        &front,
        &topic,
        &config,
        &["--timeout", "10"],
        "librdkafka must refuse a wrong server signature",
    );
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("ServerSignature"), "{err}");
    // The front end accepted the client's proof: only the client could tell.
    assert!(front.authentications() >= 1);
}

#[test]
fn librdkafka_rejects_a_scram_server_final_error() {
    let front = start(FrontOptions {
        server_final_error: true,
        ..FrontOptions::default()
    });
    let topic = unique("secure-front-final-error");
    front.create_topic(&topic, 1);
    let config = front.librdkafka_config("SASL_SSL", Some("SCRAM-SHA-256"));
    let err = produce_refused(
        &front,
        &topic,
        &config,
        &["--timeout", "10"],
        "librdkafka must treat e= as a failure",
    );
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("invalid-proof"), "{err}");
    assert_eq!(front.authentications(), 0);
    assert!(front.refused() >= 1);
}

/// A second independent client: kafka-python over SASL_SSL with SCRAM-SHA-512.
#[test]
fn kafka_python_sasl_ssl_scram_sha_512() {
    let front = start(FrontOptions::default());
    let topic = unique("secure-front-kafka-python");
    front.create_topic(&topic, 1);
    let ca = format!("ssl_cafile={}", front.certs.ca.display());
    let user = format!("sasl_plain_username={USER}");
    let pass = format!("sasl_plain_password={PASSWORD}");
    let config = [
        "security_protocol=SASL_SSL".to_string(),
        "sasl_mechanism=SCRAM-SHA-512".to_string(),
        ca,
        user,
        pass,
    ];
    let peer = Peer::on(&front.bootstrap).with_client(PeerClient::KafkaPython);
    let recs = records(3, &topic);
    peer.produce(&topic, &recs, &config_args(&config));
    let got = peer.consume(&topic, 3, Duration::from_secs(20), &config_args(&config));
    assert_eq!(values(&got), values(&recs));
    assert!(front.authentications() >= 2);
}

//! The SASL exchange and re-authentication against a scripted broker on
//! 127.0.0.1 that encodes real replies with kafka-protocol and records the
//! order of the frames it receives.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataRequest;

use super::*;
use crate::transport::kafka::config::KafkaConfig;
use crate::transport::kafka::conn::Connection;
use crate::transport::kafka::retry::{classify, Action};
use crate::transport::kafka::security::SecurityProtocol;

const PASSWORD: &str = "pa55-w0rd-never-shown";

/// What the scripted broker answers to SaslHandshake and SaslAuthenticate.
#[derive(Clone)]
enum Script {
    /// Accepts PLAIN; every SaslAuthenticate grants `lifetime_ms`.
    Plain { lifetime_ms: i64 },
    /// Refuses the mechanism (error 33), enabling these.
    Unsupported(&'static [&'static str]),
    /// SaslAuthenticate fails with code 58 and this message.
    Refuse(&'static str),
    /// SCRAM: a proper server-first, then this server-final with code 0.
    ScramFinal(&'static str),
    /// SCRAM: a server-first with too few iterations.
    ScramFewIterations,
    /// OAUTHBEARER: a JSON error challenge, then code 58.
    OAuthChallenge,
    /// PLAIN with a 300 ms session; the re-authentication is refused.
    RefuseReauth,
}

/// (api key, version, auth bytes of a SaslAuthenticate) per frame.
type Frames = Arc<Mutex<Vec<(i16, i16, Vec<u8>)>>>;

struct Broker {
    addr: String,
    /// (api key, version, auth bytes for SaslAuthenticate) per frame.
    frames: Frames,
}

impl Broker {
    /// The API keys of the frames after ApiVersions.
    fn keys(&self) -> Vec<i16> {
        let frames = self.frames.lock().unwrap();
        frames.iter().map(|f| f.0).filter(|k| *k != 18).collect()
    }
}

/// Big-endian / Kafka-encoded reply bodies (the codec crate only decodes
/// replies with the `client` feature).
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn i16(mut self, v: i16) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(mut self, v: &str) -> W {
        self = self.i16(v.len() as i16);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn varint(mut self, mut v: u32) -> W {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    /// Compact (flexible) bytes or string; `None` is null.
    fn compact(mut self, v: Option<&[u8]>) -> W {
        match v {
            None => self.varint(0),
            Some(b) => {
                self = self.varint(b.len() as u32 + 1);
                self.0.extend_from_slice(b);
                self
            }
        }
    }
    /// Frames `self` as a reply: length, correlation id, (flexible) an
    /// empty tagged-field section.
    fn reply(self, corr: i32, flexible: bool) -> Vec<u8> {
        let mut body = corr.to_be_bytes().to_vec();
        if flexible {
            body.push(0);
        }
        body.extend_from_slice(&self.0);
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }
}

fn read_varint(b: &[u8], at: &mut usize) -> u32 {
    let (mut v, mut shift) = (0u32, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u32::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn start(script: Script) -> Broker {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let frames: Frames = Arc::default();
    let seen = frames.clone();
    thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut scram_nonce = String::new();
        let mut authentications = 0;
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
            if s.read_exact(&mut frame).is_err() {
                return;
            }
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let corr = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let id_len = i16::from_be_bytes([frame[8], frame[9]]).max(0) as usize;
            let mut at = 10 + id_len;
            let mut auth = Vec::new();
            let reply = match key {
                // ApiVersions v3 first: "unsupported" with a v0 body, then v2.
                18 if version >= 3 => W::default()
                    .i16(35)
                    .i32(1)
                    .i16(18)
                    .i16(0)
                    .i16(2)
                    .reply(corr, false),
                18 => {
                    let keys = [(18, 0, 2), (3, 1, 12), (17, 0, 1), (36, 0, 2)];
                    let mut w = W::default().i16(0).i32(keys.len() as i32);
                    for (k, lo, hi) in keys {
                        w = w.i16(k).i16(lo).i16(hi);
                    }
                    w.i32(0)
                }
                .reply(corr, false),
                HANDSHAKE => {
                    let n = i16::from_be_bytes([frame[at], frame[at + 1]]) as usize;
                    let mechanism = String::from_utf8(frame[at + 2..at + 2 + n].to_vec()).unwrap();
                    match &script {
                        Script::Unsupported(enabled) => {
                            let mut w = W::default().i16(33).i32(enabled.len() as i32);
                            for m in *enabled {
                                w = w.str(m);
                            }
                            w
                        }
                        _ => W::default().i16(0).i32(1).str(&mechanism),
                    }
                    .reply(corr, false)
                }
                AUTHENTICATE => {
                    assert_eq!(version, 2);
                    at += 1; // the header's tagged fields (none)
                    let n = read_varint(&frame, &mut at) as usize - 1;
                    auth = frame[at..at + n].to_vec();
                    let text = String::from_utf8_lossy(&auth).into_owned();
                    let mut r = Auth::default();
                    match &script {
                        Script::Plain { lifetime_ms } => r.lifetime = *lifetime_ms,
                        Script::RefuseReauth if authentications == 0 => r.lifetime = 300,
                        Script::RefuseReauth => {
                            r.error = 58;
                            r.message = Some("credentials revoked");
                        }
                        Script::Refuse(m) => {
                            r.error = 58;
                            r.message = Some(m);
                        }
                        Script::ScramFinal(_) | Script::ScramFewIterations
                            if text.starts_with("n,,") =>
                        {
                            scram_nonce = text.split("r=").nth(1).unwrap().to_string();
                            let i = if matches!(script, Script::ScramFewIterations) {
                                1000
                            } else {
                                4096
                            };
                            r.bytes =
                                format!("r={scram_nonce}srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}")
                                    .into_bytes();
                        }
                        Script::ScramFinal(fin) => {
                            assert!(text.starts_with(&format!("c=biws,r={scram_nonce}srv,p=")));
                            r.bytes = fin.as_bytes().to_vec();
                        }
                        Script::OAuthChallenge if text != "\x01" => {
                            r.bytes = br#"{"status":"invalid_token"}"#.to_vec();
                        }
                        Script::OAuthChallenge => {
                            r.error = 58;
                            r.message = Some("token expired");
                        }
                        _ => unreachable!(),
                    }
                    authentications += 1;
                    W::default()
                        .i16(r.error)
                        .compact(r.message.map(str::as_bytes))
                        .compact(Some(&r.bytes))
                        .i64(r.lifetime)
                        .varint(0)
                        .reply(corr, true)
                }
                // Metadata v1: no brokers, controller -1, no topics.
                METADATA => W::default().i32(0).i32(-1).i32(0).reply(corr, false),
                other => panic!("unexpected API {other}"),
            };
            seen.lock().unwrap().push((key, version, auth));
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    });
    Broker { addr, frames }
}

#[derive(Default)]
struct Auth {
    error: i16,
    message: Option<&'static str>,
    bytes: Vec<u8>,
    lifetime: i64,
}

fn config(addr: &str, sasl: Sasl) -> KafkaConfig {
    KafkaConfig::new(addr)
        .connect_timeout(Duration::from_secs(5))
        .security_protocol(SecurityProtocol::SaslPlaintext)
        .sasl(sasl)
}

fn metadata(conn: &mut Connection) {
    conn.call(1, &MetadataRequest::default(), Duration::from_secs(2))
        .unwrap();
}

const HANDSHAKE: i16 = 17;
const AUTHENTICATE: i16 = 36;
const METADATA: i16 = 3;

#[test]
fn plain_authenticates_before_any_other_request() {
    let broker = start(Script::Plain { lifetime_ms: 0 });
    let mut conn = Connection::connect(
        &broker.addr,
        &config(&broker.addr, Sasl::plain("alice", "pw")),
    )
    .unwrap();
    metadata(&mut conn);
    assert_eq!(broker.keys(), vec![HANDSHAKE, AUTHENTICATE, METADATA]);
    let frames = broker.frames.lock().unwrap().clone();
    let frames: Vec<_> = frames.into_iter().filter(|f| f.0 != 18).collect();
    assert_eq!(frames[0].1, 1, "SaslHandshake v1");
    assert_eq!(frames[1].1, 2, "SaslAuthenticate v2 (flexible)");
    assert_eq!(frames[1].2, b"\0alice\0pw");
    assert!(!conn.reauth_due());
}

/// KIP-368: with a 300 ms session, the connection re-authenticates before
/// a request once 85-95% of it has passed, never while a request is in
/// flight, and writes nothing else during the exchange.
#[test]
fn reauthenticates_before_the_session_ends_and_never_mid_flight() {
    let broker = start(Script::Plain { lifetime_ms: 300 });
    let mut conn =
        Connection::connect(&broker.addr, &config(&broker.addr, Sasl::plain("u", "p"))).unwrap();
    metadata(&mut conn);
    assert!(!conn.reauth_due());
    thread::sleep(Duration::from_millis(300));
    assert!(conn.reauth_due());
    metadata(&mut conn); // re-authenticates first
    assert!(!conn.reauth_due());
    assert_eq!(conn.reauthentications(), 1);

    // Pipelined: A in flight when the time comes; B is written without a
    // re-authentication (A's reply is still owed), C after both replies.
    let req = MetadataRequest::default();
    let t = Duration::from_secs(2);
    let a = conn.send(1, &req, t).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(conn.reauth_due());
    let b = conn.send(1, &req, t).unwrap();
    conn.receive(a).unwrap();
    conn.receive(b).unwrap();
    metadata(&mut conn);
    assert_eq!(conn.reauthentications(), 2);
    assert_eq!(
        broker.keys(),
        vec![
            HANDSHAKE,
            AUTHENTICATE,
            METADATA,
            HANDSHAKE,
            AUTHENTICATE,
            METADATA,
            METADATA, // A
            METADATA, // B
            HANDSHAKE,
            AUTHENTICATE,
            METADATA, // C
        ]
    );
}

#[test]
fn a_refused_reauthentication_poisons_the_connection() {
    let broker = start(Script::RefuseReauth);
    let sasl = Sasl::plain("u", PASSWORD);
    let mut conn = Connection::connect(&broker.addr, &config(&broker.addr, sasl)).unwrap();
    metadata(&mut conn);
    thread::sleep(Duration::from_millis(300));
    let err = conn
        .call(1, &MetadataRequest::default(), Duration::from_secs(2))
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("credentials revoked"), "{err}");
    assert_eq!(classify(&err), Action::Fail);
    assert!(conn.is_broken());
    // Nothing was written after the refused exchange.
    assert_eq!(
        broker.keys(),
        vec![HANDSHAKE, AUTHENTICATE, METADATA, HANDSHAKE, AUTHENTICATE]
    );
}

fn failure(script: Script, sasl: Sasl) -> Error {
    let broker = start(script);
    let start = Instant::now();
    let err = Connection::connect(&broker.addr, &config(&broker.addr, sasl)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert_eq!(classify(&err), Action::Fail);
    assert!(!err.is_retriable());
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(shown.contains(&broker.addr), "{shown}");
    for text in [&shown, &debug] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
    err
}

#[test]
fn an_unknown_mechanism_lists_what_the_broker_enables() {
    let err = failure(
        Script::Unsupported(&["PLAIN", "SCRAM-SHA-512"]),
        Sasl::scram_sha256("alice", PASSWORD),
    )
    .to_string();
    assert!(
        err.contains("SASL SCRAM-SHA-256 authentication with"),
        "{err}"
    );
    assert!(err.contains("it enables: PLAIN, SCRAM-SHA-512"), "{err}");
}

#[test]
fn a_refused_login_names_mechanism_broker_and_the_brokers_message() {
    let err = failure(
        Script::Refuse("Authentication failed: Invalid username or password"),
        Sasl::plain("alice", PASSWORD),
    )
    .to_string();
    assert!(err.contains("SASL PLAIN"), "{err}");
    assert!(
        err.contains(
            "SASL_AUTHENTICATION_FAILED (58): Authentication failed: Invalid username or password"
        ),
        "{err}"
    );
}

#[test]
fn scram_failures_even_with_error_code_zero() {
    // A server signature that does not verify.
    let err = failure(
        Script::ScramFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        Sasl::scram_sha512("alice", PASSWORD),
    )
    .to_string();
    assert!(
        err.contains("SCRAM-SHA-512") && err.contains("does not verify"),
        "{err}"
    );
    // e= in server-final with Kafka error code 0 (Tansu's way).
    let err = failure(
        Script::ScramFinal("e=invalid-proof"),
        Sasl::scram_sha256("alice", PASSWORD),
    )
    .to_string();
    assert!(err.contains("invalid-proof"), "{err}");
    let err = failure(
        Script::ScramFewIterations,
        Sasl::scram_sha256("a", PASSWORD),
    )
    .to_string();
    assert!(err.contains("1000 iterations"), "{err}");
}

#[derive(Debug)]
struct Fixed;
impl TokenProvider for Fixed {
    fn token(&self) -> Result<Token> {
        Ok(Token {
            value: PASSWORD.to_string(),
            expires_at: std::time::SystemTime::now() + Duration::from_secs(60),
            extensions: vec![("traceId".into(), "7".into())],
        })
    }
}

#[test]
fn oauthbearer_error_challenge_is_answered_and_fails() {
    let err = failure(Script::OAuthChallenge, Sasl::oauthbearer(Fixed)).to_string();
    assert!(err.contains("SASL OAUTHBEARER"), "{err}");
    assert!(err.contains("token expired"), "{err}");
}

/// Secrets never show in `Debug` of the settings.
#[test]
fn debug_output_hides_secrets() {
    let configs = [
        config("a:1", Sasl::plain("alice", PASSWORD)),
        config("a:1", Sasl::scram_sha512("alice", PASSWORD)),
        config("a:1", Sasl::oauthbearer(Fixed)),
    ];
    for c in configs {
        let shown = format!("{c:?} {:?}", c.sasl);
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(
            shown.contains("redacted") || shown.contains("Fixed"),
            "{shown}"
        );
    }
    let t = Fixed.token().unwrap();
    assert!(!format!("{t:?}").contains(PASSWORD));
}

/// SASL over plain TCP and over TLS both validate (TLS checks its settings
/// too); SSL alone does not take SASL credentials, and SASL needs them.
#[test]
fn validate_allows_sasl_over_plaintext_and_tls() {
    let base = || KafkaConfig::new("a:1").sasl(Sasl::plain("u", "p"));
    assert!(base()
        .security_protocol(SecurityProtocol::SaslPlaintext)
        .validate()
        .is_ok());
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls/ca.pem");
    #[cfg(feature = "tls")]
    assert!(base()
        .security_protocol(SecurityProtocol::SaslSsl)
        .ssl_ca_location(ca)
        .validate()
        .is_ok());
    #[cfg(not(feature = "tls"))]
    let _ = ca;
    let err = base()
        .security_protocol(SecurityProtocol::Ssl)
        .validate()
        .unwrap_err();
    // Without the `tls` feature, TLS itself is refused first.
    let want = if cfg!(feature = "tls") {
        "does not authenticate"
    } else {
        "`tls` cargo feature"
    };
    assert!(err.to_string().contains(want), "{err}");
    let err = KafkaConfig::new("a:1")
        .security_protocol(SecurityProtocol::SaslPlaintext)
        .validate()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { field: "sasl", .. }),
        "{err:?}"
    );
}

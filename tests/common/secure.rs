//! A TLS / SASL front end for security tests: `tests/py/secure_front.py` in
//! front of a Tansu broker of its own.
//!
//! Tansu 0.6 serves no TLS and stores no SASL credentials with memory storage,
//! so [`SecureFront::start`] runs a small terminating proxy that does TLS
//! (optionally mutual), answers SaslHandshake / SaslAuthenticate itself
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER; user [`USER`], password
//! [`PASSWORD`]) and forwards everything else to a dedicated Tansu. That Tansu
//! advertises the front end's address, so every connection a client opens
//! (bootstrap, leaders, coordinators) goes through the front end.
//!
//! Each front end is independent (own ports, own certificate directory), so
//! tests can run in parallel. It stops when the [`SecureFront`] is dropped, or
//! when the test process dies (it exits when its stdin closes).
//!
//! Counters ([`SecureFront::connections`] etc.) are written by the front end
//! before it sends the reply that completes the event, so they can be read as
//! soon as a client call returns.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{b64_encode, py_script, require_python, tansu_bin, tansu_create_topic};

/// The user the front end knows (all password mechanisms).
pub const USER: &str = "alice";
/// [`USER`]'s password.
pub const PASSWORD: &str = "alice-secret";

/// What the front end does.
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// Serve TLS (certificates in [`SecureFront::certs`]).
    pub tls: bool,
    /// With `tls`: require a client certificate signed by [`Certs::ca`].
    pub client_auth: bool,
    /// Require SASL authentication (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER).
    pub sasl: bool,
    /// KIP-368: SaslAuthenticate v1+ replies carry this session lifetime; a
    /// connection that has not re-authenticated within it is closed at its
    /// next request (other than a SaslHandshake starting a
    /// re-authentication), as Kafka does.
    pub session_lifetime: Option<Duration>,
    /// SCRAM server-final carries a wrong `v=` signature (error code 0).
    pub bad_server_signature: bool,
    /// SCRAM server-final is `e=invalid-proof` (error code 0).
    pub server_final_error: bool,
}

impl Default for FrontOptions {
    /// TLS and SASL on, everything else off.
    fn default() -> FrontOptions {
        FrontOptions {
            tls: true,
            client_auth: false,
            sasl: true,
            session_lifetime: None,
            bad_server_signature: false,
            server_final_error: false,
        }
    }
}

/// PEM files made for one front end (all under `dir`).
#[derive(Debug, Clone)]
pub struct Certs {
    /// The directory holding everything below.
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A client certificate signed by [`Certs::ca`] (subject CN `alice`).
    pub client_cert: PathBuf,
    /// Its RSA key, PKCS#8 (`BEGIN PRIVATE KEY`).
    pub client_key: PathBuf,
    /// The same key, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub client_key_rsa: PathBuf,
    /// An unrelated CA (wrong-CA tests): signed nothing the front end uses.
    pub other_ca: PathBuf,
    /// Extra: a client certificate signed by [`Certs::other_ca`] (refused
    /// with `client_auth`).
    pub other_client_cert: PathBuf,
    /// Extra: its key (ECDSA P-256, PKCS#8).
    pub other_client_key: PathBuf,
    /// Extra: the server's certificate chain (leaf, then CA); SANs
    /// `127.0.0.1` and `localhost`; ECDSA P-256.
    pub server_cert: PathBuf,
}

/// A running front end (and its Tansu). Dropping it stops both.
pub struct SecureFront {
    /// Where clients connect: `"127.0.0.1:port"`.
    pub bootstrap: String,
    /// The certificates it serves and trusts.
    pub certs: Certs,
    /// Extra: the Tansu behind it (`"127.0.0.1:port"`, plain TCP, no auth).
    /// It advertises [`SecureFront::bootstrap`], so only tools that talk to
    /// one address (like `tansu topic create`) work on it directly.
    pub tansu: String,
    /// Extra: the options it was started with.
    pub options: FrontOptions,
    child: Child,
    stdin: Option<ChildStdin>,
    stats: PathBuf,
    log: PathBuf,
}

impl SecureFront {
    /// Starts a front end with its own Tansu and certificates. Panics with
    /// the front end's stderr if it cannot start.
    pub fn start(opts: FrontOptions) -> SecureFront {
        let py = require_python();
        let script = py_script("secure_front.py");
        let dir = front_dir();
        let log = dir.join("secure_front.log");
        let log_file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut cmd = Command::new(&py);
        cmd.arg(&script)
            .arg("--dir")
            .arg(&dir)
            .arg("--tansu")
            .arg(tansu_bin())
            .arg("--verbose");
        if opts.tls {
            cmd.arg("--tls");
        }
        if opts.client_auth {
            assert!(opts.tls, "FrontOptions: client_auth needs tls");
            cmd.arg("--client-auth");
        }
        if opts.sasl {
            cmd.arg("--sasl");
        }
        if let Some(l) = opts.session_lifetime {
            cmd.arg("--session-lifetime-ms")
                .arg(l.as_millis().max(1).to_string());
        }
        if opts.bad_server_signature {
            cmd.arg("--bad-server-signature");
        }
        if opts.server_final_error {
            cmd.arg("--server-final-error");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {}: {e}", py.display(), script.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
            // The front end prints nothing more; its stdout closes when it exits.
        });
        let ready = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let mut front_log = String::new();
        let parsed: Option<Value> = serde_json::from_str(ready.trim()).ok();
        let Some(v) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut front_log));
            panic!(
                "secure_front.py did not start (printed {ready:?}); its stderr:\n{front_log}\n\
                 tansu log: {}",
                dir.join("tansu.log").display()
            );
        };
        let path = |k: &str| PathBuf::from(v["certs"][k].as_str().unwrap_or_default());
        let certs = Certs {
            dir: dir.clone(),
            ca: path("ca"),
            client_cert: path("client_cert"),
            client_key: path("client_key"),
            client_key_rsa: path("client_key_rsa"),
            other_ca: path("other_ca"),
            other_client_cert: path("other_client_cert"),
            other_client_key: path("other_client_key"),
            server_cert: path("server_cert"),
        };
        SecureFront {
            bootstrap: format!("127.0.0.1:{}", v["port"].as_u64().expect("port")),
            certs,
            tansu: v["tansu"].as_str().expect("tansu").to_string(),
            options: opts,
            child,
            stdin,
            stats: PathBuf::from(v["stats"].as_str().expect("stats")),
            log,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        // Rewritten atomically (rename) by the front end; read it fresh.
        let text = std::fs::read_to_string(&self.stats)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.stats.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}: {text:?}", self.stats.display()));
        v[name].as_u64().unwrap_or(0)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.counter("connections")
    }

    /// Successful SASL exchanges, re-authentications included.
    pub fn authentications(&self) -> u64 {
        self.counter("authentications")
    }

    /// Successful SASL exchanges on an already-authenticated connection (KIP-368).
    pub fn reauthentications(&self) -> u64 {
        self.counter("reauthentications")
    }

    /// Failed SASL exchanges: error 58 replies, refused OAUTHBEARER tokens,
    /// and (with `server_final_error`) each `e=` server-final sent.
    pub fn refused(&self) -> u64 {
        self.counter("refused")
    }

    /// Extra: TLS handshakes that failed (wrong CA, missing client cert, ...).
    pub fn tls_failures(&self) -> u64 {
        self.counter("tls_failures")
    }

    /// Extra: connections closed for a request sent after their session
    /// lifetime without re-authenticating.
    pub fn expired(&self) -> u64 {
        self.counter("expired")
    }

    /// Extra: creates `topic` on the Tansu behind the front end (directly, no
    /// TLS/SASL needed). Tansu creates no topic on its own.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        tansu_create_topic(&self.tansu, topic, partitions)
    }

    /// Extra: the front end's log (stderr), for failure messages.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Extra: the front end's log, as text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Extra: librdkafka properties (as `peer.py --config K=V` arguments) for
    /// `security.protocol` `protocol` ("SSL", "SASL_SSL", "SASL_PLAINTEXT",
    /// ...) and `mechanism` (None for no SASL), trusting [`Certs::ca`] and
    /// logging in as [`USER`]; OAUTHBEARER uses librdkafka's unsecured
    /// token builder (principal [`USER`]).
    pub fn librdkafka_config(&self, protocol: &str, mechanism: Option<&str>) -> Vec<String> {
        let mut c = vec![format!("security.protocol={protocol}")];
        if protocol.contains("SSL") {
            c.push(format!("ssl.ca.location={}", self.certs.ca.display()));
        }
        match mechanism {
            None => {}
            Some("OAUTHBEARER") => {
                c.push("sasl.mechanism=OAUTHBEARER".into());
                c.push("enable.sasl.oauthbearer.unsecure.jwt=true".into());
                c.push(format!("sasl.oauthbearer.config=principal={USER}"));
            }
            Some(m) => {
                c.push(format!("sasl.mechanism={m}"));
                c.push(format!("sasl.username={USER}"));
                c.push(format!("sasl.password={PASSWORD}"));
            }
        }
        c
    }
}

/// `["--config", c1, "--config", c2, ...]` for `peer.py`.
pub fn config_args(config: &[String]) -> Vec<&str> {
    config
        .iter()
        .flat_map(|c| ["--config", c.as_str()])
        .collect()
}

impl Drop for SecureFront {
    fn drop(&mut self) {
        // Closing stdin makes the front end stop its Tansu and exit.
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // Kept after a failure, for its logs.
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.certs.dir);
        }
    }
}

/// A fresh directory for one front end's certificates, stats and logs.
fn front_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "secure-front-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// An unsecured JWS (`{"alg":"none"}`, no signature) with claims `sub`,
/// `iat` (now) and `exp`, as Kafka's default OAUTHBEARER validator accepts:
/// `base64url(header).base64url(claims).` (note the trailing dot).
pub fn unsecured_jwt(subject: &str, expires_unix_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let header = serde_json::json!({"alg": "none"});
    let claims = serde_json::json!({"sub": subject, "iat": now.min(expires_unix_secs), "exp": expires_unix_secs});
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn b64url(data: &[u8]) -> String {
    b64_encode(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

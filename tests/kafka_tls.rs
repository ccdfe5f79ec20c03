//! TLS through the secure front end (`tests/common/secure.rs`: Python's
//! `ssl` module terminating TLS in front of a Tansu of its own): round
//! trips with server-authenticated and mutual TLS (PKCS#8 and PKCS#1 RSA
//! keys), a properties file, and every failure a user meets (wrong CA,
//! hostname mismatch, missing client certificate, plaintext / TLS
//! mismatch): each a clear error within the connect timeout, with no
//! reconnect storm (the front end counts connections).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, Transport};
use kafka_retry::{Error, KafkaConfig, KafkaTransport, OutRecord, SecurityProtocol};

use common::secure::{FrontOptions, SecureFront};
use common::unique;

fn tls_front(client_auth: bool) -> SecureFront {
    SecureFront::start(FrontOptions {
        tls: true,
        client_auth,
        sasl: false,
        ..FrontOptions::default()
    })
}

fn ssl(front: &SecureFront) -> KafkaConfig {
    KafkaConfig::new(&front.bootstrap)
        .security_protocol(SecurityProtocol::Ssl)
        .ssl_ca_location(&front.certs.ca)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
}

/// Produces `values` to a new topic and reads them back with a group
/// consumer, all over `config`.
fn round_trip(front: &SecureFront, config: KafkaConfig, values: &[Vec<u8>]) {
    let kafka = KafkaTransport::connect(config)
        .unwrap_or_else(|e| panic!("{e}\nfront end log:\n{}", front.log_text()));
    let topic = unique("tls");
    kafka.create_topic(&topic, 1, None).unwrap();
    let producer = kafka.producer().unwrap();
    for v in values {
        producer
            .send(OutRecord::new(&topic).key("k").value(v.clone()))
            .unwrap();
    }
    let mut cc = ConsumerConfig::new(unique("tls-group"), [topic.as_str()]);
    cc.session_timeout = Duration::from_secs(2);
    let mut consumer = kafka.consumer(cc).unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < values.len() && Instant::now() < deadline {
        if let ConsumerEvent::Records(r) = consumer.poll(Duration::from_millis(300)).unwrap() {
            got.extend(
                r.iter()
                    .map(|r| r.value.as_deref().unwrap_or_default().to_vec()),
            );
        }
    }
    assert_eq!(got.len(), values.len(), "records read back over TLS");
    assert!(got == values, "values differ after the round trip");
    consumer.close().unwrap();
}

fn small_and_large() -> Vec<Vec<u8>> {
    // The large one spans many TLS records both ways.
    vec![
        b"hello over TLS".to_vec(),
        (0..300 * 1024).map(|i| (i % 251) as u8).collect(),
    ]
}

/// The error `config` gets from connect, checked to come within the
/// connect timeout and after at most `max_connections` connections.
fn connect_error(front: &SecureFront, config: KafkaConfig, max_connections: u64) -> Error {
    let before = front.connections();
    let start = Instant::now();
    let err = KafkaTransport::connect(config).expect_err("connect must fail");
    let took = start.elapsed();
    println!("error: {err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    // No storm: nothing keeps reconnecting after the error either.
    thread::sleep(Duration::from_millis(300));
    let made = front.connections() - before;
    assert!(
        (1..=max_connections).contains(&made),
        "{made} connections for one failed connect: {err}"
    );
    err
}

#[test]
fn smoke_ssl_round_trip() {
    let front = tls_front(false);
    round_trip(&front, ssl(&front), &small_and_large());
}

#[test]
fn mutual_tls_round_trip_with_pkcs8_and_rsa_keys() {
    let front = tls_front(true);
    let pkcs8 = ssl(&front)
        .ssl_certificate_location(&front.certs.client_cert)
        .ssl_key_location(&front.certs.client_key);
    round_trip(&front, pkcs8, &[b"pkcs8".to_vec()]);

    let rsa_pem = std::fs::read_to_string(&front.certs.client_key_rsa).unwrap();
    assert!(rsa_pem.contains("BEGIN RSA PRIVATE KEY"));
    let rsa = ssl(&front)
        .ssl_certificate_pem(std::fs::read_to_string(&front.certs.client_cert).unwrap())
        .ssl_key_pem(rsa_pem);
    round_trip(&front, rsa, &[b"rsa".to_vec()]);
}

#[test]
fn from_a_properties_file() {
    let front = tls_front(true);
    let file = front.certs.dir.join("client.properties");
    let text = format!(
        "# as a Java client or librdkafka would read it\n\
         bootstrap.servers = {}\n\
         security.protocol = SSL\n\
         ssl.ca.location = {}\n\
         ssl.certificate.location: {}\n\
         ssl.key.location: {}\n\
         ssl.endpoint.identification.algorithm=https\n\
         socket.connection.setup.timeout.ms=5000\n\
         request.timeout.ms=10000\n\
         client.id=tls-properties-test\n\
         # another client's key, skipped with a warning\n\
         key.serializer=org.apache.kafka.common.serialization.StringSerializer\n",
        front.bootstrap,
        front.certs.ca.display(),
        front.certs.client_cert.display(),
        front.certs.client_key.display(),
    );
    std::fs::write(&file, text).unwrap();
    let config = KafkaConfig::from_properties_file(&file).unwrap();
    round_trip(&front, config, &[b"from properties".to_vec()]);
}

#[test]
fn wrong_ca_is_a_tls_error_without_retries() {
    let front = tls_front(false);
    let config = ssl(&front).ssl_ca_location(&front.certs.other_ca);
    let err = connect_error(&front, config, 1);
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("not signed by a trusted CA") && text.contains(&front.bootstrap),
        "{text}"
    );
    assert!(!err.is_retriable());

    // Two bootstrap addresses: each tried once, and the TLS error comes
    // back as such (not folded into a retriable I/O error).
    let twice = format!("{0},{0}", front.bootstrap);
    let config = ssl(&front)
        .bootstrap(&twice)
        .ssl_ca_location(&front.certs.other_ca);
    let err = connect_error(&front, config, 2);
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
}

/// Forwards connections made to `127.0.0.2:port` (a name the front end's
/// certificate lacks) to `target`.
fn relay_on_another_address(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(&target) else {
                continue;
            };
            let pump = |mut from: TcpStream, mut to: TcpStream| {
                thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                })
            };
            pump(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pump(upstream, client);
        }
    });
    addr
}

#[test]
fn hostname_mismatch_is_a_tls_error_unless_verification_is_off() {
    let front = tls_front(false);
    // The leaf names 127.0.0.1 and localhost, not 127.0.0.2.
    let relay = relay_on_another_address(front.bootstrap.clone());
    let config = || ssl(&front).bootstrap(&relay);
    let err = connect_error(&front, config(), 1);
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("does not name `127.0.0.2") && text.contains("identification"),
        "{text}"
    );

    // Explicitly off: the same connection works (the chain is still checked).
    let off = KafkaConfig::from_properties([
        ("bootstrap.servers", relay.as_str()),
        ("security.protocol", "SSL"),
        ("ssl.ca.location", front.certs.ca.to_str().unwrap()),
        ("ssl.endpoint.identification.algorithm", "none"),
    ])
    .unwrap();
    let kafka = KafkaTransport::connect(off).unwrap();
    let topic = unique("tls-no-hostname");
    kafka.create_topic(&topic, 1, None).unwrap();
    assert_eq!(kafka.partition_count(&topic).unwrap(), Some(1));
}

#[test]
fn missing_client_certificate_is_a_tls_error() {
    let front = tls_front(true);
    let err = connect_error(&front, ssl(&front), 1);
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("client certificate"), "{err}");

    // A certificate from a CA the front end does not trust: refused too.
    let err = connect_error(
        &front,
        ssl(&front)
            .ssl_certificate_location(&front.certs.other_client_cert)
            .ssl_key_location(&front.certs.other_client_key),
        1,
    );
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("client certificate"), "{err}");
}

#[test]
fn plaintext_client_to_the_tls_listener_names_security_protocol() {
    let front = tls_front(false);
    let config = KafkaConfig::new(&front.bootstrap).connect_timeout(Duration::from_secs(3));
    let before = front.connections();
    let start = Instant::now();
    let err = KafkaTransport::connect(config).expect_err("plaintext to TLS must fail");
    assert!(start.elapsed() < Duration::from_secs(4), "{err}");
    assert!(err.to_string().contains("security.protocol=SSL"), "{err}");
    assert!(front.connections() - before <= 1);
}

#[test]
fn tls_client_to_a_plaintext_listener_says_it_may_be_plaintext() {
    let front = SecureFront::start(FrontOptions {
        tls: false,
        client_auth: false,
        sasl: false,
        ..FrontOptions::default()
    });
    let config = KafkaConfig::new(&front.bootstrap)
        .security_protocol(SecurityProtocol::Ssl)
        // Any CA: the handshake fails before a certificate is seen.
        .ssl_ca_location(common::repo_root().join("tests/data/tls/ca.pem"))
        .connect_timeout(Duration::from_secs(3));
    let err = connect_error(&front, config, 1);
    assert!(err.to_string().contains("plaintext listener"), "{err}");
}

#[test]
fn a_key_that_is_not_the_certificates_fails_at_config_time() {
    let front = tls_front(true);
    let config = ssl(&front)
        .ssl_certificate_location(&front.certs.client_cert)
        .ssl_key_location(&front.certs.other_client_key);
    let before = front.connections();
    let err = KafkaTransport::connect(config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "ssl.key.location",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("does not go with the certificate"), "{text}");
    assert_eq!(
        front.connections(),
        before,
        "no connection for a bad config"
    );
}

#[test]
fn sasl_ssl_round_trip_with_every_mechanism() {
    use common::secure::{PASSWORD, USER};
    use kafka_retry::{Sasl, UnsecuredJwt};
    let front = SecureFront::start(FrontOptions {
        tls: true,
        sasl: true,
        ..FrontOptions::default()
    });
    let mechanisms = [
        Sasl::plain(USER, PASSWORD),
        Sasl::scram_sha256(USER, PASSWORD),
        Sasl::scram_sha512(USER, PASSWORD),
        Sasl::oauthbearer(UnsecuredJwt::new(USER)),
    ];
    for sasl in mechanisms {
        let name = sasl.mechanism().to_string();
        let config = ssl(&front)
            .security_protocol(SecurityProtocol::SaslSsl)
            .sasl(sasl);
        round_trip(&front, config, &[name.into_bytes()]);
    }
    assert!(front.authentications() >= 4);

    // The same from a properties file as librdkafka would take it.
    let file = front.certs.dir.join("sasl_ssl.properties");
    std::fs::write(
        &file,
        format!(
            "bootstrap.servers={}\nsecurity.protocol=SASL_SSL\nssl.ca.location={}\n\
             sasl.mechanism=SCRAM-SHA-512\nsasl.username={USER}\nsasl.password={PASSWORD}\n",
            front.bootstrap,
            front.certs.ca.display()
        ),
    )
    .unwrap();
    let config = KafkaConfig::from_properties_file(&file).unwrap();
    assert!(!format!("{config:?}").contains(PASSWORD));
    round_trip(&front, config, &[b"scram over tls from a file".to_vec()]);
}

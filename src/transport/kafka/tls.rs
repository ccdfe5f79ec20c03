//! TLS for broker connections (`security.protocol=SSL` / `SASL_SSL`).
//!
//! Three parts: the settings ([`TlsSettings`]: trusted CAs, a client
//! certificate, hostname verification; plain data, present with or without
//! the `tls` feature so that a properties file parses the same everywhere),
//! the rustls client config built from them once per [`KafkaConfig`]
//! (files read, keys checked against certificates at config time), and the
//! stream a [`Connection`](super::conn::Connection) reads and writes
//! ([`TlsStream`], rustls over a buffered TCP socket).
//!
//! [`KafkaConfig`]: super::config::KafkaConfig

use std::fmt;
use std::path::PathBuf;

#[cfg(feature = "tls")]
pub(crate) use imp::{connect, stream_error};

/// A PEM input: a file, or the PEM text itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Pem {
    File(PathBuf),
    Text(String),
}

impl Pem {
    /// For messages: the file's path, or "the PEM string set with `prop`".
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn describe(&self, prop: &str) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Text(_) => format!("the PEM text of {prop}"),
        }
    }
}

/// TLS settings of a [`KafkaConfig`](super::config::KafkaConfig).
///
/// `Debug` shows file paths and sizes, never a private key.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// Trusted CAs (`ssl.ca.location` / `ssl.ca.pem`); `None`: the system
    /// trust store.
    pub(crate) ca: Option<Pem>,
    /// Client certificate chain (`ssl.certificate.location` / `.pem`).
    pub(crate) cert: Option<Pem>,
    /// Its private key (`ssl.key.location` / `.pem`).
    pub(crate) key: Option<Pem>,
    /// `ssl.endpoint.identification.algorithm=none`: the chain is still
    /// verified, the broker's name is not.
    pub(crate) no_hostname_check: bool,
    /// A user-built rustls config, used as is.
    #[cfg(feature = "tls")]
    pub(crate) custom: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The rustls config built from the settings, once. Every setter that
    /// changes a setting replaces it with a new, empty one (see
    /// [`TlsSettings::changed`]); clones of a config share it.
    #[cfg(feature = "tls")]
    built: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>>>,
}

impl TlsSettings {
    /// Call after changing a setting: forgets the built config.
    pub(crate) fn changed(&mut self) {
        #[cfg(feature = "tls")]
        {
            self.built = Default::default();
        }
    }

    /// Whether a CA, client certificate or custom config is set (settings
    /// that make no sense without TLS).
    pub(crate) fn any_set(&self) -> bool {
        #[cfg(feature = "tls")]
        let custom = self.custom.is_some();
        #[cfg(not(feature = "tls"))]
        let custom = false;
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || custom
    }

    /// Checks the settings as far as can be done before connecting: files
    /// exist and parse, the key matches the certificate, a provider exists.
    /// Builds (and keeps) the rustls config.
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        #[cfg(feature = "tls")]
        return self.client_config().map(|_| ());
        #[cfg(not(feature = "tls"))]
        Err(no_tls_feature())
    }
}

/// The error for TLS in a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
pub(crate) fn no_tls_feature() -> crate::error::Error {
    crate::error::Error::config(
        "security.protocol",
        "TLS (SSL, SASL_SSL) needs the `tls` cargo feature of kafka-retry, \
         which this build does not have",
    )
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "File({})", p.display()),
            Pem::Text(t) => write!(f, "Pem({} bytes)", t.len()),
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsSettings");
        d.field("ca", &self.ca).field("cert", &self.cert);
        // A key file's path is no secret; the key text is.
        match &self.key {
            Some(Pem::Text(_)) => d.field("key", &"<redacted>"),
            other => d.field("key", other),
        };
        d.field("no_hostname_check", &self.no_hostname_check);
        #[cfg(feature = "tls")]
        d.field(
            "custom",
            &self.custom.as_ref().map(|_| "rustls::ClientConfig"),
        );
        d.finish()
    }
}

#[cfg(feature = "tls")]
mod imp {
    use std::io::{self, IoSlice, Read, Write};
    use std::net::TcpStream;
    use std::sync::{Arc, Once};
    use std::time::Instant;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{
        AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
        RootCertStore, SignatureScheme, StreamOwned,
    };

    use super::{Pem, TlsSettings};
    use crate::error::{Error, Result};

    /// A TLS connection to a broker: rustls over a buffered socket.
    pub(crate) type TlsStream = StreamOwned<ClientConnection, BufferedTcp>;

    impl TlsSettings {
        /// The rustls config: the custom one, or the one built from the
        /// settings (built on first use, then shared).
        pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>> {
            if let Some(c) = &self.custom {
                return Ok(c.clone());
            }
            if let Some(c) = self.built.get() {
                return Ok(c.clone());
            }
            let c = Arc::new(self.build()?);
            // Two threads may build at once; either result is the same.
            let _ = self.built.set(c.clone());
            Ok(c)
        }

        fn build(&self) -> Result<ClientConfig> {
            let provider = Arc::new(provider()?);
            let roots = Arc::new(self.roots()?);
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_config_error(format!("provider: {e}")))?;
            let builder = if self.no_hostname_check {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| tls_config_error(format!("certificate verifier: {e}")))?;
                warn_no_hostname_check();
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoHostnameCheck { inner }))
            } else {
                builder.with_root_certificates(roots)
            };
            match (&self.cert, &self.key) {
                (None, None) => Ok(builder.with_no_client_auth()),
                (Some(_), None) => Err(Error::config(
                    "ssl.key.location",
                    "a client certificate is set (ssl.certificate.*) but not its key: \
                     set ssl.key.location or ssl.key.pem",
                )),
                (None, Some(_)) => Err(Error::config(
                    "ssl.certificate.location",
                    "a client key is set (ssl.key.*) but not its certificate: \
                     set ssl.certificate.location or ssl.certificate.pem",
                )),
                (Some(cert), Some(key)) => {
                    let chain = certificates(cert, "ssl.certificate.location")?;
                    let der = private_key(key)?;
                    builder.with_client_auth_cert(chain, der).map_err(|e| {
                        Error::config(
                            "ssl.key.location",
                            format!(
                                "{} does not go with the certificate in {}: {}",
                                key.describe("ssl.key.pem"),
                                cert.describe("ssl.certificate.pem"),
                                describe_rustls(&e)
                            ),
                        )
                    })
                }
            }
        }

        /// The trusted CAs: `ssl.ca.*`, or else the system's.
        fn roots(&self) -> Result<RootCertStore> {
            let mut roots = RootCertStore::empty();
            let Some(ca) = &self.ca else {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = match found.errors.first() {
                        Some(e) => format!(" ({e})"),
                        None => String::new(),
                    };
                    return Err(Error::config(
                        "ssl.ca.location",
                        format!(
                            "no CA certificate found in the system trust store{why}: set \
                             ssl.ca.location (a PEM file) or ssl.ca.pem to the CA that \
                             signed the brokers' certificates"
                        ),
                    ));
                }
                return Ok(roots);
            };
            let certs = match ca {
                Pem::File(dir) if dir.is_dir() => ca_directory(dir)?,
                _ => certificates(ca, "ssl.ca.location")?,
            };
            for c in certs {
                roots.add(c).map_err(|e| {
                    Error::config(
                        "ssl.ca.location",
                        format!(
                            "{}: not a usable CA certificate: {e}",
                            ca.describe("ssl.ca.pem")
                        ),
                    )
                })?;
            }
            Ok(roots)
        }
    }

    /// Every certificate in a directory's files (librdkafka accepts a
    /// directory for `ssl.ca.location`); files without one are skipped.
    fn ca_directory(dir: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::config("ssl.ca.location", format!("{}: {e}", dir.display())))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(certs) = certificates(&Pem::File(path), "ssl.ca.location") {
                out.extend(certs);
            }
        }
        if out.is_empty() {
            return Err(Error::config(
                "ssl.ca.location",
                format!("{}: no PEM certificate in this directory", dir.display()),
            ));
        }
        Ok(out)
    }

    /// The bytes of a PEM input; a file error names the file.
    fn read(pem: &Pem, prop: &'static str) -> Result<Vec<u8>> {
        match pem {
            Pem::Text(t) => Ok(t.as_bytes().to_vec()),
            Pem::File(p) => std::fs::read(p)
                .map_err(|e| Error::config(prop, format!("cannot read {}: {e}", p.display()))),
        }
    }

    /// The certificates of a PEM input, in order (a chain: leaf first).
    fn certificates(pem: &Pem, prop: &'static str) -> Result<Vec<CertificateDer<'static>>> {
        let bytes = read(pem, prop)?;
        let text_prop = pem_prop(prop);
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                Error::config(prop, format!("{}: bad PEM: {e}", pem.describe(text_prop)))
            })?;
        if certs.is_empty() {
            return Err(Error::config(
                prop,
                format!(
                    "{}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it{}",
                    pem.describe(text_prop),
                    not_pem_hint(&bytes)
                ),
            ));
        }
        Ok(certs)
    }

    /// The private key of a PEM input: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>> {
        let prop = "ssl.key.location";
        let bytes = read(pem, prop)?;
        let what = pem.describe("ssl.key.pem");
        if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || contains(&bytes, b"Proc-Type: 4,ENCRYPTED")
        {
            return Err(Error::config(
                prop,
                format!(
                    "{what}: the key is encrypted, which is not supported (ssl.key.password): \
                     decrypt it first, e.g. `openssl pkcs8 -in key.pem -out key-plain.pem` \
                     (or `openssl rsa` for an RSA key), and keep the result private"
                ),
            ));
        }
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            let why = match e {
                rustls::pki_types::pem::Error::NoItemsFound => format!(
                    "no PEM private key (\"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" \
                     or \"EC PRIVATE KEY\") in it{}",
                    not_pem_hint(&bytes)
                ),
                e => format!("bad PEM: {e}"),
            };
            Error::config(prop, format!("{what}: {why}"))
        })
    }

    fn pem_prop(prop: &str) -> &'static str {
        match prop {
            "ssl.ca.location" => "ssl.ca.pem",
            "ssl.certificate.location" => "ssl.certificate.pem",
            _ => "ssl.key.pem",
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// What a file that is not PEM probably is.
    fn not_pem_hint(bytes: &[u8]) -> &'static str {
        if bytes.is_empty() {
            " (it is empty)"
        } else if bytes[0] == 0x30 {
            " (it looks like DER: convert it with `openssl x509 -in FILE -inform der -out FILE.pem`)"
        } else if !bytes.starts_with(b"-----") && std::str::from_utf8(bytes).is_err() {
            " (it is binary, not PEM text: a JKS or PKCS#12 keystore? convert it to PEM \
             with keytool/openssl)"
        } else {
            ""
        }
    }

    /// The crypto provider: an opt-in C one if selected, else graviola
    /// where it runs, else a process-wide default the application installed.
    fn provider() -> Result<CryptoProvider> {
        #[cfg(feature = "tls-aws-lc-rs")]
        return Ok(rustls::crypto::aws_lc_rs::default_provider());
        #[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc-rs")))]
        return Ok(rustls::crypto::ring::default_provider());
        #[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")))]
        {
            let why = match graviola() {
                Ok(p) => return Ok(p),
                Err(why) => why,
            };
            if let Some(p) = CryptoProvider::get_default() {
                return Ok(CryptoProvider::clone(p));
            }
            Err(tls_config_error(format!(
                "no TLS crypto provider: {why}; enable the cargo feature `tls-ring` or \
                 `tls-aws-lc-rs` of kafka-retry (both compile C), or install a rustls \
                 CryptoProvider for the process (CryptoProvider::install_default)"
            )))
        }
    }

    /// The provider, for the tests' servers.
    #[cfg(test)]
    pub(crate) fn test_provider() -> CryptoProvider {
        provider().expect("a TLS provider for the tests")
    }

    /// graviola, if this CPU has what it needs (it panics otherwise).
    #[cfg(all(
        not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")),
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    fn graviola() -> std::result::Result<CryptoProvider, String> {
        #[cfg(target_arch = "x86_64")]
        let ok = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("adx")
            && std::arch::is_x86_feature_detected!("avx")
            && std::arch::is_x86_feature_detected!("avx2");
        #[cfg(target_arch = "aarch64")]
        let ok = std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("sha2")
            && std::arch::is_aarch64_feature_detected!("pmull")
            && std::arch::is_aarch64_feature_detected!("neon");
        if ok {
            Ok(rustls_graviola::default_provider())
        } else {
            Err(
                "this CPU lacks features the pure-Rust provider (graviola) needs \
                 (x86_64: aes, pclmulqdq, bmi1, bmi2, adx, avx, avx2; aarch64: aes, sha2, \
                 pmull, neon)"
                    .to_string(),
            )
        }
    }

    #[cfg(all(
        not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")),
        not(any(target_arch = "x86_64", target_arch = "aarch64"))
    ))]
    fn graviola() -> std::result::Result<CryptoProvider, String> {
        Err(format!(
            "the pure-Rust provider (graviola) exists for x86_64 and aarch64 only, not {}",
            std::env::consts::ARCH
        ))
    }

    fn tls_config_error(reason: String) -> Error {
        Error::config("security.protocol", reason)
    }

    fn warn_no_hostname_check() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            log::warn!(
                "kafka: TLS hostname verification is off \
                 (ssl.endpoint.identification.algorithm=none): any certificate signed by a \
                 trusted CA is accepted for every broker"
            )
        });
    }

    /// Verifies the chain, validity and signatures like rustls's WebPKI
    /// verifier, but not that the certificate names the broker
    /// (`ssl.endpoint.identification.algorithm=none`). WebPKI checks the
    /// name last, after the chain, so a name error means all else passed.
    #[derive(Debug)]
    struct NoHostnameCheck {
        inner: Arc<WebPkiServerVerifier>,
    }

    impl ServerCertVerifier for NoHostnameCheck {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    /// The TCP socket under rustls, with a read buffer: rustls reads at
    /// most 4 KiB per call, so without it a 1 MiB Fetch reply would cost
    /// 256 `read` syscalls; with it, one per 64 KiB (or per what the
    /// kernel has). Writes go straight through (rustls already gathers a
    /// whole request's records into one vectored write).
    pub(crate) struct BufferedTcp {
        tcp: TcpStream,
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    }

    const READ_BUFFER: usize = 64 * 1024;

    impl BufferedTcp {
        fn new(tcp: TcpStream) -> Self {
            BufferedTcp {
                tcp,
                buf: vec![0; READ_BUFFER].into_boxed_slice(),
                start: 0,
                end: 0,
            }
        }
    }

    impl Read for BufferedTcp {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.start == self.end {
                // Big reads bypass the buffer.
                if out.len() >= self.buf.len() {
                    return self.tcp.read(out);
                }
                self.end = self.tcp.read(&mut self.buf)?;
                self.start = 0;
            }
            let n = out.len().min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            Ok(n)
        }
    }

    impl Write for BufferedTcp {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.tcp.write(buf)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.tcp.write_vectored(bufs)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.tcp.flush()
        }
    }

    /// The TLS handshake with `addr` over `tcp` (whose clone the caller
    /// keeps for timeouts), finished before `deadline`. SNI and the name
    /// checked against the certificate are `addr`'s host (an IP address is
    /// checked against the certificate's IP SANs).
    pub(crate) fn connect(
        tcp: TcpStream,
        addr: &str,
        settings: &TlsSettings,
        deadline: Instant,
    ) -> Result<TlsStream> {
        let config = settings.client_config()?;
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| Error::Tls {
            context: format!("TLS to {addr}"),
            reason: format!("`{host}` is not a valid DNS name or IP address: {e}"),
        })?;
        let conn = ClientConnection::new(config, name).map_err(|e| Error::Tls {
            context: format!("TLS to {addr}"),
            reason: describe_rustls(&e),
        })?;
        let timeouts = tcp
            .try_clone()
            .map_err(|e| Error::io(format!("connect {addr}"), e))?;
        let mut stream = StreamOwned::new(conn, BufferedTcp::new(tcp));
        while stream.conn.is_handshaking() {
            let arm = crate::transport::kafka::conn::left(deadline).and_then(|left| {
                timeouts.set_read_timeout(Some(left))?;
                timeouts.set_write_timeout(Some(left))
            });
            let step = arm.and_then(|()| {
                let StreamOwned { conn, sock } = &mut stream;
                conn.complete_io(sock)
            });
            if let Err(e) = step {
                return Err(stream_error(
                    format!("TLS handshake with {addr}"),
                    addr,
                    Some(settings),
                    e,
                ));
            }
        }
        Ok(stream)
    }

    /// An I/O error from a TLS stream as the crate's error: a TLS failure
    /// (bad certificate, alert from the broker) is [`Error::Tls`], which is
    /// not retried; a dropped connection stays [`Error::Io`] (with a hint
    /// during the handshake). `settings` (when known) sharpen the hints.
    pub(crate) fn stream_error(
        ctx: String,
        addr: &str,
        settings: Option<&TlsSettings>,
        e: io::Error,
    ) -> Error {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Error::Tls {
                context: ctx,
                reason: explain(tls, settings, addr),
            };
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                Error::Timeout(format!("{ctx}: no answer in time (is the listener TLS?)"))
            }
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
                if settings.is_some() =>
            {
                let kind = e.kind();
                Error::io(
                    ctx,
                    io::Error::new(
                        kind,
                        format!(
                            "{e}: the broker closed the connection during the TLS handshake; \
                             it may be a plaintext listener (security.protocol=PLAINTEXT or \
                             SASL_PLAINTEXT), or require a client certificate"
                        ),
                    ),
                )
            }
            _ => Error::io(ctx, e),
        }
    }

    /// A rustls error in words, with what to check.
    fn explain(e: &rustls::Error, settings: Option<&TlsSettings>, addr: &str) -> String {
        let trust = match settings.map(|s| &s.ca) {
            Some(Some(ca)) => format!("the CA in {}", ca.describe("ssl.ca.pem")),
            Some(None) => {
                "the system trust store (set ssl.ca.location for a private CA)".to_string()
            }
            None => "ssl.ca.location, or the system trust store".to_string(),
        };
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the broker's certificate is not signed by a trusted CA ({c:?}); trusted: \
                     {trust}"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("the broker's certificate has expired ({c:?})")
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!("the broker's certificate is not valid yet ({c:?}): check the clock")
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                    let names = match c {
                        CertificateError::NotValidForNameContext { presented, .. } => {
                            format!(" (it names {})", presented.join(", "))
                        }
                        _ => String::new(),
                    };
                    format!(
                        "the broker's certificate does not name `{host}`{names}: connect by \
                         a name the certificate has, or (not advised) turn hostname \
                         verification off with ssl.endpoint.identification.algorithm=none"
                    )
                }
                other => format!("the broker's certificate was refused: {other:?}"),
            },
            E::AlertReceived(a) => {
                let cert_hint = match settings.map(|s| s.cert.is_some()) {
                    Some(false) => {
                        "; it may require a client certificate (ssl.certificate.location, \
                         ssl.key.location)"
                    }
                    Some(true) => "; it may not trust our client certificate",
                    None => {
                        "; it may require a client certificate (ssl.certificate.location, \
                         ssl.key.location), or not trust ours"
                    }
                };
                match a {
                    AlertDescription::CertificateRequired
                    | AlertDescription::HandshakeFailure
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::AccessDenied => {
                        format!("the broker refused the connection (TLS alert {a:?}){cert_hint}")
                    }
                    _ => format!("the broker sent the TLS alert {a:?}"),
                }
            }
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => format!(
                "the broker does not speak TLS ({}): it may be a plaintext listener \
                 (security.protocol=PLAINTEXT or SASL_PLAINTEXT)",
                describe_rustls(e)
            ),
            other => describe_rustls(other),
        }
    }

    fn describe_rustls(e: &rustls::Error) -> String {
        match e {
            rustls::Error::InconsistentKeys(k) => {
                format!("the private key is not the certificate's ({k:?})")
            }
            other => other.to_string(),
        }
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

    use crate::error::Error;
    use crate::transport::kafka::config::KafkaConfig;
    use crate::transport::kafka::conn::Connection;
    use crate::transport::kafka::SecurityProtocol;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls/");

    fn path(name: &str) -> String {
        format!("{DIR}{name}")
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(super::imp::test_provider())
    }

    fn certs(name: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path(name))
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
    }

    /// ApiVersions v0-style body: no error, ApiVersions 0..=2, Metadata 1..=12.
    fn api_versions_reply(corr: i32) -> Vec<u8> {
        let mut b = corr.to_be_bytes().to_vec();
        b.extend_from_slice(&0i16.to_be_bytes());
        let keys: [(i16, i16, i16); 2] = [(18, 0, 2), (3, 1, 12)];
        b.extend_from_slice(&(keys.len() as i32).to_be_bytes());
        for (k, lo, hi) in keys {
            for v in [k, lo, hi] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        b.extend_from_slice(&0i32.to_be_bytes());
        let mut out = (b.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&b);
        out
    }

    /// Answers Kafka frames with an ApiVersions reply until the client goes.
    fn serve_kafka(s: &mut impl ReadWrite) {
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut frame = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
            if s.read_exact(&mut frame).is_err() || frame.len() < 8 {
                return;
            }
            let corr = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if s.write_all(&api_versions_reply(corr)).is_err() || s.flush().is_err() {
                return;
            }
        }
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    /// A TLS "broker" on 127.0.0.1 for one connection, with `cert` (and
    /// server.key); with `client_ca`, it requires a client certificate.
    fn tls_broker(cert: &str, client_ca: Option<&str>) -> (String, thread::JoinHandle<()>) {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certs(ca) {
                    roots.add(c).unwrap();
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(v)
            }
        };
        let key = PrivateKeyDer::from_pem_file(path("server.key")).unwrap();
        let config = Arc::new(builder.with_single_cert(certs(cert), key).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = ServerConnection::new(config).unwrap();
            let mut s = StreamOwned::new(conn, tcp);
            while s.conn.is_handshaking() {
                let StreamOwned { conn, sock } = &mut s;
                if conn.complete_io(sock).is_err() {
                    // Send the alert rustls queued, if any.
                    let _ = conn.write_tls(sock);
                    return;
                }
            }
            serve_kafka(&mut s);
        });
        (addr, handle)
    }

    fn ssl(addr: &str) -> KafkaConfig {
        KafkaConfig::new(addr)
            .connect_timeout(Duration::from_secs(5))
            .security_protocol(SecurityProtocol::Ssl)
            .ssl_ca_location(path("ca.pem"))
    }

    /// Connects and returns the error, checking that it came in time.
    fn connect_err(addr: &str, config: &KafkaConfig) -> Error {
        let start = Instant::now();
        let err = Connection::connect(addr, config).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(4), "{err}");
        err
    }

    #[test]
    fn smoke_tls_to_an_ip_address_and_a_name() {
        let (addr, broker) = tls_broker("server.pem", None);
        let conn = Connection::connect(&addr, &ssl(&addr)).unwrap();
        assert!(conn
            .version(kafka_protocol::messages::ApiKey::Metadata)
            .is_ok());
        drop(conn);
        broker.join().unwrap();

        let (addr, broker) = tls_broker("server.pem", None);
        let by_name = addr.replace("127.0.0.1", "localhost");
        let config = ssl(&by_name).ssl_ca_pem(std::fs::read_to_string(path("ca.pem")).unwrap());
        Connection::connect(&by_name, &config).unwrap();
        broker.join().unwrap();
    }

    #[test]
    fn a_ca_directory_and_a_users_rustls_config() {
        let (addr, broker) = tls_broker("server.pem", None);
        Connection::connect(&addr, &ssl(&addr).ssl_ca_location(DIR)).unwrap();
        broker.join().unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(certs("ca.pem").remove(0)).unwrap();
        let own = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (addr, broker) = tls_broker("server.pem", None);
        // The ssl_* settings are ignored for a custom config.
        let config = ssl(&addr)
            .ssl_ca_location(path("other-ca.pem"))
            .tls_config(Arc::new(own));
        Connection::connect(&addr, &config).unwrap();
        broker.join().unwrap();
    }

    /// Without a CA setting, the system trust store (rustls-native-certs,
    /// which reads `SSL_CERT_FILE` when set); empty, a clear error. One
    /// test, so nothing else runs with the variable changed.
    #[test]
    fn no_ca_setting_uses_the_system_trust_store() {
        let no_ca = |addr: &str| {
            KafkaConfig::new(addr)
                .connect_timeout(Duration::from_secs(5))
                .security_protocol(SecurityProtocol::Ssl)
        };
        std::env::set_var("SSL_CERT_FILE", path("ca.pem"));
        let (addr, broker) = tls_broker("server.pem", None);
        let ok = Connection::connect(&addr, &no_ca(&addr));
        broker.join().unwrap();

        let empty = std::env::temp_dir().join(format!("kafka-retry-empty-{}", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        std::env::set_var("SSL_CERT_FILE", &empty);
        std::env::set_var("SSL_CERT_DIR", &empty);
        let none = no_ca("a:1").validate();
        std::env::remove_var("SSL_CERT_FILE");
        std::env::remove_var("SSL_CERT_DIR");
        let _ = std::fs::remove_file(&empty);

        ok.unwrap();
        let err = none.unwrap_err().to_string();
        assert!(
            err.contains("no CA certificate found in the system trust store")
                && err.contains("set ssl.ca.location"),
            "{err}"
        );
    }

    #[test]
    fn untrusted_expired_and_misnamed_certificates_are_tls_errors() {
        let cases = [
            ("server.pem", "other-ca.pem", "not signed by a trusted CA"),
            ("server-expired.pem", "ca.pem", "has expired"),
            ("server-other-name.pem", "ca.pem", "does not name"),
        ];
        for (cert, ca, want) in cases {
            let (addr, broker) = tls_broker(cert, None);
            let err = connect_err(&addr, &ssl(&addr).ssl_ca_location(path(ca)));
            let text = err.to_string();
            assert!(matches!(err, Error::Tls { .. }), "{err:?}");
            assert!(text.contains(want) && text.contains(&addr), "{text}");
            assert_eq!(
                crate::transport::kafka::retry::classify(&err),
                crate::transport::kafka::retry::Action::Fail
            );
            broker.join().unwrap();
        }
    }

    #[test]
    fn hostname_verification_can_be_turned_off_but_not_the_chain() {
        let (addr, broker) = tls_broker("server-other-name.pem", None);
        Connection::connect(&addr, &ssl(&addr).ssl_hostname_verification(false)).unwrap();
        broker.join().unwrap();

        let (addr, broker) = tls_broker("server.pem", None);
        let config = ssl(&addr)
            .ssl_hostname_verification(false)
            .ssl_ca_location(path("other-ca.pem"));
        let err = connect_err(&addr, &config).to_string();
        assert!(err.contains("not signed by a trusted CA"), "{err}");
        broker.join().unwrap();
    }

    #[test]
    fn mutual_tls_with_pkcs8_and_rsa_keys() {
        for (cert, key) in [
            ("client.pem", "client.key"),
            ("client-rsa.pem", "client-rsa.key"),
        ] {
            let (addr, broker) = tls_broker("server.pem", Some("ca.pem"));
            let config = ssl(&addr)
                .ssl_certificate_location(path(cert))
                .ssl_key_pem(std::fs::read_to_string(path(key)).unwrap());
            config.validate().unwrap();
            Connection::connect(&addr, &config).unwrap();
            broker.join().unwrap();
        }

        // No client certificate: the broker's alert, explained.
        let (addr, broker) = tls_broker("server.pem", Some("ca.pem"));
        let err = connect_err(&addr, &ssl(&addr));
        assert!(matches!(err, Error::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("client certificate"), "{err}");
        broker.join().unwrap();
    }

    #[test]
    fn bad_files_are_config_errors_naming_the_file() {
        let cfg = |c: KafkaConfig| match c.validate() {
            Err(Error::Config { field, reason }) => format!("{field}: {reason}"),
            other => panic!("expected a config error, got {other:?}"),
        };
        let base = || ssl("127.0.0.1:1");
        let missing = cfg(base().ssl_ca_location("/nonexistent/ca.pem"));
        assert!(
            missing.starts_with("ssl.ca.location: cannot read /nonexistent/ca.pem"),
            "{missing}"
        );
        let not_pem = cfg(base().ssl_ca_location(path("../../../Cargo.toml")));
        assert!(
            not_pem.contains("Cargo.toml: no PEM certificate"),
            "{not_pem}"
        );
        let der = cfg(base().ssl_ca_pem("\u{30}\u{82}garbage"));
        assert!(der.contains("ssl.ca.pem") && der.contains("DER"), "{der}");

        let mismatch = cfg(base()
            .ssl_certificate_location(path("client.pem"))
            .ssl_key_location(path("server.key")));
        assert!(
            mismatch.contains("server.key does not go with the certificate in")
                && mismatch.contains("client.pem"),
            "{mismatch}"
        );
        let encrypted = cfg(base()
            .ssl_certificate_location(path("client.pem"))
            .ssl_key_location(path("client-encrypted.key")));
        assert!(encrypted.contains("encrypted"), "{encrypted}");
        let cert_as_key = cfg(base()
            .ssl_certificate_location(path("client.pem"))
            .ssl_key_location(path("client.pem")));
        assert!(cert_as_key.contains("no PEM private key"), "{cert_as_key}");
        let no_key = cfg(base().ssl_certificate_location(path("client.pem")));
        assert!(no_key.starts_with("ssl.key.location"), "{no_key}");

        // TLS settings under PLAINTEXT: refused, never ignored.
        let plain = cfg(KafkaConfig::new("a:1").ssl_ca_location(path("ca.pem")));
        assert!(plain.contains("use SSL or SASL_SSL"), "{plain}");
        // A good config validates (and keeps its built rustls config).
        base().validate().unwrap();
    }

    #[test]
    fn debug_never_shows_a_private_key() {
        let key = std::fs::read_to_string(path("client.key")).unwrap();
        let config = ssl("a:1")
            .ssl_certificate_location(path("client.pem"))
            .ssl_key_pem(key.clone());
        let shown = format!("{config:?}");
        assert!(
            shown.contains("<redacted>") && shown.contains("client.pem"),
            "{shown}"
        );
        let body = key.lines().nth(1).unwrap();
        assert!(
            !shown.contains(body) && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
    }

    #[test]
    fn tls_client_to_a_plaintext_listener_says_so() {
        // A Kafka listener that closes on a bad frame (as Kafka does on the
        // ClientHello's impossible length).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            let _ = s.read_exact(&mut buf);
            drop(s);
        });
        let err = connect_err(&addr, &ssl(&addr)).to_string();
        assert!(err.contains("plaintext listener"), "{err}");
        broker.join().unwrap();

        // One that answers in Kafka frames: not TLS records.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            let _ = s.read_exact(&mut buf);
            let _ = s.write_all(&api_versions_reply(0));
            thread::sleep(Duration::from_millis(300));
        });
        let err = connect_err(&addr, &ssl(&addr)).to_string();
        assert!(err.contains("plaintext listener"), "{err}");
        broker.join().unwrap();
    }

    #[test]
    fn plaintext_client_to_a_tls_listener_says_so() {
        let (addr, broker) = tls_broker("server.pem", None);
        let config = KafkaConfig::new(&addr).connect_timeout(Duration::from_secs(5));
        let err = connect_err(&addr, &config).to_string();
        assert!(err.contains("security.protocol=SSL"), "{err}");
        broker.join().unwrap();

        // A TLS listener that just drops the connection.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = thread::spawn(move || {
            // Closing with the request unread sends a reset.
            let (s, _) = listener.accept().unwrap();
            thread::sleep(Duration::from_millis(200));
            drop(s);
        });
        let err = connect_err(&addr, &config).to_string();
        assert!(
            err.contains("may expect TLS (security.protocol=SSL"),
            "{err}"
        );
        broker.join().unwrap();
    }
}

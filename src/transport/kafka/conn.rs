//! One connection to one broker: framing, correlation ids, version
//! negotiation (ApiVersions) and typed request/response calls.
//!
//! Invariant: replies are read in the order their requests were written
//! (the broker answers one connection's requests in order), each completely
//! before the next. [`Connection::call`] keeps one request in flight;
//! [`Connection::send`] and [`Connection::receive`] let the producer keep
//! several. After any I/O error, timeout or correlation mismatch the
//! connection is *poisoned* (a late reply would otherwise answer the next
//! request): every later call fails at once, every request still
//! outstanding is lost, and the owner drops it and connects again.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, HeaderVersion, StrBytes,
};

use super::config::KafkaConfig;
use super::sasl;
use crate::error::{Error, KafkaCode, Result};

/// A byte stream to a broker: plain TCP, or rustls over TCP
/// (`tls::TlsStream`).
pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Maps a request struct to its key and response type (kafka-protocol's own
/// `Request` trait needs the `broker` feature, which we do not enable).
pub(crate) trait KafkaRequest: Encodable + HeaderVersion {
    /// The API this request belongs to.
    const KEY: ApiKey;
    /// The reply's type.
    type Response: Decodable + HeaderVersion;
}

macro_rules! kafka_request {
    ($($req:ident => $resp:ident, $key:ident;)*) => {$(
        impl KafkaRequest for $req {
            const KEY: ApiKey = ApiKey::$key;
            type Response = $resp;
        }
    )*};
}

kafka_request! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    MetadataRequest => MetadataResponse, Metadata;
    ProduceRequest => ProduceResponse, Produce;
    FetchRequest => FetchResponse, Fetch;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator;
    JoinGroupRequest => JoinGroupResponse, JoinGroup;
    SyncGroupRequest => SyncGroupResponse, SyncGroup;
    HeartbeatRequest => HeartbeatResponse, Heartbeat;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit;
    CreateTopicsRequest => CreateTopicsResponse, CreateTopics;
    DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs;
    InitProducerIdRequest => InitProducerIdResponse, InitProducerId;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate;
}

/// The versions we speak per API (wire notes §2, "We request"): inside the
/// crate structs' ranges, without the removed (KIP-896) versions and without
/// the topic-id-only versions (Produce 13, Fetch 13+).
pub(crate) const OUR_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::Metadata, 1, 13),
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::CreateTopics, 2, 7),
    // The engine's check of its retry topic's cleanup settings.
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::InitProducerId, 0, 5),
    // v0 would send the SASL tokens unframed after the handshake.
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The ApiVersions version we try first (wire notes §2).
const API_VERSIONS_FIRST: i16 = 3;
const UNSUPPORTED_VERSION: i16 = KafkaCode::UNSUPPORTED_VERSION.code();
/// Frame bytes allowed beyond `fetch_max_bytes` (headers, metadata of big
/// clusters). Frames are capped before we allocate for them.
const FRAME_SLACK: usize = 100 * 1024 * 1024;

/// Short name of an API for messages, e.g. `"Produce"`.
pub(crate) fn api_name(key: ApiKey) -> String {
    format!("{key:?}")
}

/// A connection to one broker.
pub(crate) struct Connection {
    stream: Box<dyn ReadWrite + Send>,
    /// The socket under `stream`, kept to set per-call timeouts.
    tcp: TcpStream,
    addr: String,
    /// Broker ranges from ApiVersions: (api key, min, max).
    broker_versions: Vec<(i16, i16, i16)>,
    correlation: i32,
    /// Correlation ids of the requests written and not yet answered, oldest
    /// first.
    outstanding: VecDeque<i32>,
    client_id: StrBytes,
    max_frame: usize,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
    /// SASL credentials and re-authentication schedule, once authenticated.
    auth: Option<sasl::Session>,
    /// Whether `stream` is TLS (for error messages).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: bool,
}

/// A request written by [`Connection::send`] whose reply is still to be
/// read with [`Connection::receive`].
pub(crate) struct Sent<R> {
    correlation: i32,
    version: i16,
    deadline: Instant,
    timeout: Duration,
    /// "Produce v11 to host:port", for errors.
    ctx: String,
    _reply: PhantomData<fn() -> R>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// TCP connect (timeout), TCP_NODELAY, then ApiVersions (v3, falling back
    /// to the broker's max) -> negotiated versions. Everything within
    /// `config.connect_timeout`.
    pub(crate) fn connect(addr: &str, config: &KafkaConfig) -> Result<Connection> {
        let deadline = Instant::now() + config.connect_timeout;
        let ctx = || format!("connect {addr}");
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::io(ctx(), e))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        let mut tcp = None;
        for sa in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                break;
            }
            match TcpStream::connect_timeout(&sa, left) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| Error::io(ctx(), last))?;
        tcp.set_nodelay(true).map_err(|e| Error::io(ctx(), e))?;
        let stream_half = tcp.try_clone().map_err(|e| Error::io(ctx(), e))?;
        let tls = config.security_protocol.uses_tls();
        let stream: Box<dyn ReadWrite + Send> = if tls {
            tls_stream(stream_half, addr, config, deadline)?
        } else {
            Box::new(stream_half)
        };
        let mut conn = Connection {
            stream,
            tcp,
            addr: addr.to_string(),
            broker_versions: Vec::new(),
            correlation: 0,
            outstanding: VecDeque::new(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            max_frame: FRAME_SLACK.saturating_add(config.fetch_max_bytes.max(0) as usize),
            broken: None,
            auth: None,
            tls,
        };
        match conn.setup(config, deadline) {
            Ok(()) => Ok(conn),
            // ApiVersions never answered: say what a mismatch of
            // security.protocol looks like.
            Err(e) if conn.broker_versions.is_empty() => Err(setup_hint(e, config)),
            Err(e) => Err(e),
        }
    }

    /// Connection setup, in one place: ApiVersions, then (SASL_PLAINTEXT,
    /// SASL_SSL) SaslHandshake + SaslAuthenticate. A TLS stream is wrapped
    /// around `tcp` in `connect` above.
    fn setup(&mut self, config: &KafkaConfig, deadline: Instant) -> Result<()> {
        self.negotiate(deadline)?;
        if config.security_protocol.uses_sasl() {
            let sasl = config.sasl.clone().ok_or_else(|| {
                Error::config(
                    "sasl",
                    format!("{} needs SASL credentials", config.security_protocol),
                )
            })?;
            let lifetime = sasl::authenticate(self, &sasl, deadline)?;
            log::debug!(
                "kafka: SASL {} authenticated to {}{}",
                sasl.mechanism(),
                self.addr,
                lifetime.map_or(String::new(), |l| format!(", session lifetime {l:?}"))
            );
            self.auth = Some(sasl::Session::new(sasl, config.connect_timeout, lifetime));
        }
        Ok(())
    }

    /// Whether the broker's session lifetime is nearly over (KIP-368): the
    /// next request written re-authenticates first, once nothing is in
    /// flight. A pipelining caller reads its outstanding replies before
    /// writing when this is true (see `sasl/reauth.rs`).
    pub(crate) fn reauth_due(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.due(Instant::now()))
    }

    /// Re-authentications done on this connection.
    #[cfg(test)]
    pub(crate) fn reauthentications(&self) -> u64 {
        self.auth.as_ref().map_or(0, |a| a.reauths)
    }

    /// Runs the SASL exchange again on this connection (nothing is in
    /// flight). A failure poisons the connection: its session is about to
    /// end, and the owner's reconnect authenticates afresh (or reports the
    /// refusal).
    fn reauthenticate(&mut self) -> Result<()> {
        let Some(session) = self.auth.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + session.timeout;
        let result = sasl::authenticate(self, &session.sasl, deadline);
        let mut session = session;
        match result {
            Ok(lifetime) => {
                log::debug!(
                    "kafka: SASL {} re-authenticated to {}",
                    session.sasl.mechanism(),
                    self.addr
                );
                session.renewed(lifetime);
                self.auth = Some(session);
                Ok(())
            }
            Err(e) => {
                self.auth = Some(session);
                if self.broken.is_none() {
                    self.broken = Some(format!("re-authentication failed: {e}"));
                    self.outstanding.clear();
                }
                Err(e)
            }
        }
    }

    /// ApiVersions (v3, falling back to the broker's max).
    fn negotiate(&mut self, deadline: Instant) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut version = API_VERSIONS_FIRST;
        for _ in 0..3 {
            let resp = self.api_versions_call(version, left)?;
            if resp.error_code == UNSUPPORTED_VERSION {
                // The broker answered at v0 with its own ApiVersions range:
                // retry at its max (capped at ours).
                let max = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| k.max_version)
                    .unwrap_or(0);
                let next = max.clamp(0, 4);
                if next == version {
                    break;
                }
                version = next;
                continue;
            }
            if resp.error_code != 0 {
                return Err(Error::kafka(
                    format!("ApiVersions v{version} to {}", self.addr),
                    resp.error_code,
                ));
            }
            self.broker_versions = resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect();
            return Ok(());
        }
        Err(Error::Protocol(format!(
            "ApiVersions to {}: no version accepted (tried up to v{API_VERSIONS_FIRST})",
            self.addr
        )))
    }

    /// ApiVersions is special: a broker that does not know our version
    /// replies with a v0 body (error 35), so decode by the error code.
    fn api_versions_call(
        &mut self,
        version: i16,
        timeout: Duration,
    ) -> Result<ApiVersionsResponse> {
        let mut req = ApiVersionsRequest::default();
        if version >= 3 {
            req.client_software_name = StrBytes::from_static_str("kafka-retry");
            req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        }
        let body = self.round_trip(&req, version, timeout)?;
        let what = || format!("ApiVersions v{version} reply from {}", self.addr);
        if body.len() < 2 {
            return Err(Error::Protocol(format!("{}: too short", what())));
        }
        let code = i16::from_be_bytes([body[0], body[1]]);
        let at = if code == UNSUPPORTED_VERSION {
            0
        } else {
            version
        };
        let mut b = body.clone();
        match ApiVersionsResponse::decode(&mut b, at) {
            Ok(r) => Ok(r),
            // Java also falls back to v0 when the reply does not parse.
            Err(_) if at != 0 => ApiVersionsResponse::decode(&mut body.clone(), 0)
                .map_err(|e| Error::Protocol(format!("{}: {e}", what()))),
            Err(e) => Err(Error::Protocol(format!("{}: {e}", what()))),
        }
    }

    /// The broker address, `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Highest version both we and the broker support for `key`;
    /// `Err(Error::Protocol)` naming the API and both ranges when none.
    pub(crate) fn version(&self, key: ApiKey) -> Result<i16> {
        let ours = OUR_VERSIONS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|&(_, lo, hi)| (lo, hi))
            .ok_or_else(|| {
                Error::Protocol(format!("{} is not used by this client", api_name(key)))
            })?;
        let theirs = self
            .broker_versions
            .iter()
            .find(|(k, _, _)| *k == key as i16)
            .map(|&(_, lo, hi)| (lo, hi));
        match theirs {
            None => Err(Error::Protocol(format!(
                "broker {} does not support {} (we need v{}..=v{})",
                self.addr,
                api_name(key),
                ours.0,
                ours.1
            ))),
            Some((lo, hi)) => {
                let (min, max) = (lo.max(ours.0), hi.min(ours.1));
                if min > max {
                    Err(Error::Protocol(format!(
                        "broker {} supports {} v{lo}..=v{hi}, we need v{}..=v{}",
                        self.addr,
                        api_name(key),
                        ours.0,
                        ours.1
                    )))
                } else {
                    Ok(max)
                }
            }
        }
    }

    /// The negotiated version of every API we use (`None`: no common one).
    pub(crate) fn negotiated_versions(&self) -> Vec<(ApiKey, Option<i16>)> {
        OUR_VERSIONS
            .iter()
            .map(|&(k, _, _)| (k, self.version(k).ok()))
            .collect()
    }

    /// Encodes `req` at `version`, sends it, reads the reply within `timeout`,
    /// checks the correlation id and decodes it.
    pub(crate) fn call<R: KafkaRequest>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response> {
        let mut body = self.round_trip(req, version, timeout)?;
        R::Response::decode(&mut body, version).map_err(|e| {
            Error::Protocol(format!(
                "decode {} v{version} reply from {}: {e}",
                api_name(R::KEY),
                self.addr
            ))
        })
    }

    /// Whether the connection is poisoned (drop it and reconnect).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Encodes `req` at `version` and writes it, without waiting for the
    /// reply: read it later with [`Connection::receive`]. Several requests
    /// may be outstanding; the broker answers them in order, and replies
    /// must be read in the order the requests were sent. The reply must
    /// arrive within `timeout` of this call.
    pub(crate) fn send<R: KafkaRequest>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<Sent<R>> {
        let ctx = format!("{} v{version} to {}", api_name(R::KEY), self.addr);
        self.usable(&ctx)?;
        if !matches!(
            R::KEY,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        ) && self.outstanding.is_empty()
            && self.reauth_due()
        {
            self.reauthenticate()?;
        }
        let correlation = self.correlation;
        self.correlation = self.correlation.checked_add(1).unwrap_or(0);

        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY as i16;
        header.request_api_version = version;
        header.correlation_id = correlation;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0); // length, patched below
        encode_request_header_into_buffer(&mut buf, &header)
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| Error::Protocol(format!("encode {ctx}: {e}")))?;
        let len = i32::try_from(buf.len() - 4)
            .map_err(|_| Error::Protocol(format!("encode {ctx}: request too large")))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());

        let deadline = Instant::now() + timeout;
        if let Err(e) = self.write_frame(&buf, deadline) {
            return Err(self.poison(&ctx, timeout, e));
        }
        self.outstanding.push_back(correlation);
        Ok(Sent {
            correlation,
            version,
            deadline,
            timeout,
            ctx,
            _reply: PhantomData,
        })
    }

    /// Reads and decodes the reply to `sent`, which must be the oldest
    /// request still unanswered on this connection.
    pub(crate) fn receive<R: KafkaRequest>(&mut self, sent: Sent<R>) -> Result<R::Response> {
        let version = sent.version;
        let mut body = self.receive_body(&sent, R::Response::header_version(version))?;
        R::Response::decode(&mut body, version).map_err(|e| {
            Error::Protocol(format!(
                "decode {} v{version} reply from {}: {e}",
                api_name(R::KEY),
                self.addr
            ))
        })
    }

    /// Requests sent and not yet answered.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// `Err` naming `ctx` once the connection is poisoned.
    fn usable(&self, ctx: &str) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::io(
                ctx.to_string(),
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("connection unusable: {why}"),
                ),
            )),
        }
    }

    /// Marks the connection unusable after `e` and returns `e` as an
    /// [`Error`] (a timeout becomes [`Error::Timeout`]).
    fn poison(&mut self, ctx: &str, timeout: Duration, e: FrameError) -> Error {
        let err = match e {
            FrameError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Error::Timeout(format!("{ctx} after {timeout:?}"))
            }
            #[cfg(feature = "tls")]
            FrameError::Io(e) if self.tls => {
                super::tls::stream_error(ctx.to_string(), &self.addr, None, e)
            }
            FrameError::Io(e) => Error::io(ctx.to_string(), e),
            FrameError::Protocol(m) => Error::Protocol(format!("{ctx}: {m}")),
        };
        self.broken = Some(err.to_string());
        self.outstanding.clear();
        err
    }

    /// Reads the reply to `sent` and returns its body (after the header).
    fn receive_body<R>(&mut self, sent: &Sent<R>, header_version: i16) -> Result<Bytes> {
        self.usable(&sent.ctx)?;
        let result = match self.outstanding.front() {
            Some(&c) if c == sent.correlation => {
                self.read_frame(sent.deadline).and_then(|mut frame| {
                    let header = ResponseHeader::decode(&mut frame, header_version)
                        .map_err(|e| FrameError::Protocol(format!("bad response header: {e}")))?;
                    if header.correlation_id != sent.correlation {
                        return Err(FrameError::Protocol(format!(
                            "correlation id {} does not match request {}",
                            header.correlation_id, sent.correlation
                        )));
                    }
                    Ok(frame)
                })
            }
            _ => Err(FrameError::Protocol(format!(
                "reply to request {} read out of order (bug)",
                sent.correlation
            ))),
        };
        match result {
            Ok(body) => {
                self.outstanding.pop_front();
                Ok(body)
            }
            Err(e) => Err(self.poison(&sent.ctx, sent.timeout, e)),
        }
    }

    /// Sends one request and returns the reply body (after its header).
    fn round_trip<R: KafkaRequest>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes> {
        let sent = self.send(version, req, timeout)?;
        self.receive_body(&sent, R::Response::header_version(version))
    }

    /// Writes a whole request frame.
    fn write_frame(&mut self, request: &[u8], deadline: Instant) -> Result<(), FrameError> {
        self.tcp.set_write_timeout(Some(left(deadline)?))?;
        self.stream.write_all(request)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Reads a whole reply frame (after its length).
    fn read_frame(&mut self, deadline: Instant) -> Result<Bytes, FrameError> {
        let mut raw = [0u8; 4];
        self.read_full(&mut raw, deadline)?;
        let len = i32::from_be_bytes(raw);
        if len < 4 || len as usize > self.max_frame {
            return Err(FrameError::Protocol(format!(
                "reply frame length {len} outside 4..={}{}",
                self.max_frame,
                not_kafka_hint(raw)
            )));
        }
        let mut frame = vec![0u8; len as usize];
        self.read_full(&mut frame, deadline)?;
        Ok(Bytes::from(frame))
    }

    fn read_full(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), FrameError> {
        let mut filled = 0;
        while filled < buf.len() {
            // Re-arm the timeout before every read so the whole reply, not
            // each read, is bounded by the deadline.
            self.tcp.set_read_timeout(Some(left(deadline)?))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the broker",
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(())
    }
}

/// What an impossible frame length suggests about the other end: its first
/// bytes as text when they are printable (`HTTP`, `SSH-`), or a TLS record
/// (0x15 alert, 0x16 handshake, then version 0x03). Empty when nothing fits.
fn not_kafka_hint(first: [u8; 4]) -> String {
    if matches!(first, [0x15 | 0x16, 0x03, ..]) {
        return ": not a Kafka broker? the reply is a TLS record (a TLS listener?): \
                the broker may expect security.protocol=SSL (or SASL_SSL)"
            .to_string();
    }
    if first.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let text: String = first.iter().map(|&b| char::from(b)).collect();
        return format!(": not a Kafka broker? the reply starts with {text:?}");
    }
    String::new()
}

pub(crate) fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    } else {
        Ok(left)
    }
}

/// The TLS stream around `tcp`, after its handshake (before `deadline`).
#[cfg(feature = "tls")]
fn tls_stream(
    tcp: TcpStream,
    addr: &str,
    config: &KafkaConfig,
    deadline: Instant,
) -> Result<Box<dyn ReadWrite + Send>> {
    Ok(Box::new(super::tls::connect(
        tcp,
        addr,
        &config.tls,
        deadline,
    )?))
}

/// Without the `tls` feature there is no TLS stream (`validate` says so
/// first; this guards callers that skip it).
#[cfg(not(feature = "tls"))]
fn tls_stream(
    _tcp: TcpStream,
    _addr: &str,
    _config: &KafkaConfig,
    _deadline: Instant,
) -> Result<Box<dyn ReadWrite + Send>> {
    Err(super::tls::no_tls_feature())
}

/// A connection dropped before ApiVersions was answered: the likeliest
/// cause is a security.protocol that does not match the listener, or (over
/// TLS) a broker that refused our client certificate without an alert
/// (TLS 1.3 checks it after the client's handshake is done).
fn setup_hint(e: Error, config: &KafkaConfig) -> Error {
    let Error::Io { context, source } = e else {
        return e;
    };
    let dropped = matches!(
        source.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
    );
    if !dropped {
        return Error::Io { context, source };
    }
    if config.security_protocol.uses_tls() {
        // Not retried: the same certificate gets the same answer.
        let why = if config.tls.cert.is_some() {
            "it may not trust our client certificate (ssl.certificate.location)"
        } else {
            "it may require a client certificate (set ssl.certificate.location and \
             ssl.key.location)"
        };
        return Error::Tls {
            context,
            reason: format!(
                "{source}: the broker closed the TLS connection right after the handshake, \
                 before answering ApiVersions; {why}"
            ),
        };
    }
    Error::io(
        context,
        io::Error::new(
            source.kind(),
            format!(
                "{source}; the broker closed the connection before answering ApiVersions: \
                 it may expect TLS (security.protocol=SSL or SASL_SSL)"
            ),
        ),
    )
}

enum FrameError {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;
    use std::io::{Read, Write};

    /// Our ranges must stay inside what the crate's structs can encode.
    #[test]
    fn our_ranges_fit_the_crate() {
        fn range<R: Message>() -> (i16, i16) {
            (R::VERSIONS.min, R::VERSIONS.max)
        }
        let crate_ranges = [
            (ApiKey::ApiVersions, range::<ApiVersionsRequest>()),
            (ApiKey::Metadata, range::<MetadataRequest>()),
            (ApiKey::Produce, range::<ProduceRequest>()),
            (ApiKey::Fetch, range::<FetchRequest>()),
            (ApiKey::ListOffsets, range::<ListOffsetsRequest>()),
            (ApiKey::FindCoordinator, range::<FindCoordinatorRequest>()),
            (ApiKey::JoinGroup, range::<JoinGroupRequest>()),
            (ApiKey::SyncGroup, range::<SyncGroupRequest>()),
            (ApiKey::Heartbeat, range::<HeartbeatRequest>()),
            (ApiKey::LeaveGroup, range::<LeaveGroupRequest>()),
            (ApiKey::OffsetFetch, range::<OffsetFetchRequest>()),
            (ApiKey::OffsetCommit, range::<OffsetCommitRequest>()),
            (ApiKey::CreateTopics, range::<CreateTopicsRequest>()),
            (ApiKey::DescribeConfigs, range::<DescribeConfigsRequest>()),
            (ApiKey::InitProducerId, range::<InitProducerIdRequest>()),
            (ApiKey::SaslHandshake, range::<SaslHandshakeRequest>()),
            (ApiKey::SaslAuthenticate, range::<SaslAuthenticateRequest>()),
        ];
        assert_eq!(crate_ranges.len(), OUR_VERSIONS.len());
        for (key, (lo, hi)) in crate_ranges {
            let &(_, our_lo, our_hi) = OUR_VERSIONS.iter().find(|(k, _, _)| *k == key).unwrap();
            assert!(
                lo <= our_lo && our_hi <= hi,
                "{key:?}: ours {our_lo}..={our_hi}, crate {lo}..={hi}"
            );
        }
    }

    /// A scripted broker on 127.0.0.1: answers each request with
    /// `reply(api_key, version, correlation)` (the whole frame after the
    /// length), or stays silent for `None`.
    fn fake_broker(
        reply: impl Fn(i16, i16, i32) -> Option<Vec<u8>> + Send + 'static,
    ) -> (String, std::thread::JoinHandle<Vec<(i16, i16)>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).is_err() {
                    return seen;
                }
                let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
                if s.read_exact(&mut frame).is_err() {
                    return seen;
                }
                let key = i16::from_be_bytes([frame[0], frame[1]]);
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let corr = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                seen.push((key, version));
                match reply(key, version, corr) {
                    Some(body) => {
                        // A body starting with 0x7f is sent as-is (a raw length).
                        let mut out = Vec::new();
                        if body.first() != Some(&0x7f) {
                            out.extend_from_slice(&(body.len() as i32).to_be_bytes());
                        }
                        out.extend_from_slice(&body);
                        // The client may be gone (it dropped a poisoned
                        // connection with requests still unanswered).
                        if s.write_all(&out).is_err() {
                            return seen;
                        }
                    }
                    None => std::thread::sleep(Duration::from_secs(2)),
                }
            }
        });
        (addr, handle)
    }

    /// ApiVersions v0-2 body: error, [(key, min, max)], (v1+) throttle.
    fn api_versions_body(
        corr: i32,
        error: i16,
        keys: &[(i16, i16, i16)],
        throttle: bool,
    ) -> Vec<u8> {
        let mut b = corr.to_be_bytes().to_vec();
        b.extend_from_slice(&error.to_be_bytes());
        b.extend_from_slice(&(keys.len() as i32).to_be_bytes());
        for (k, lo, hi) in keys {
            for v in [k, lo, hi] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        if throttle {
            b.extend_from_slice(&0i32.to_be_bytes());
        }
        b
    }

    fn config() -> KafkaConfig {
        KafkaConfig::new("127.0.0.1:1").connect_timeout(Duration::from_secs(5))
    }

    #[test]
    fn api_versions_falls_back_to_the_brokers_max() {
        let (addr, broker) = fake_broker(|key, version, corr| {
            assert_eq!(key, 18);
            Some(if version >= 3 {
                // An old broker: v0 body, UNSUPPORTED_VERSION, its own range.
                api_versions_body(corr, 35, &[(18, 0, 2)], false)
            } else {
                api_versions_body(corr, 0, &[(18, 0, 2), (3, 0, 8), (1, 0, 3)], true)
            })
        });
        let conn = Connection::connect(&addr, &config()).unwrap();
        assert_eq!(conn.version(ApiKey::Metadata).unwrap(), 8);
        // Fetch 0-3 only: no overlap with our 4-12; Produce: absent.
        let fetch = conn.version(ApiKey::Fetch).unwrap_err().to_string();
        assert!(
            fetch.contains("Fetch v0..=v3") && fetch.contains("v4..=v12"),
            "{fetch}"
        );
        let produce = conn.version(ApiKey::Produce).unwrap_err().to_string();
        assert!(produce.contains("does not support Produce"), "{produce}");
        drop(conn);
        assert_eq!(broker.join().unwrap(), vec![(18, 3), (18, 2)]);
    }

    #[test]
    fn correlation_mismatch_and_timeout_poison_the_connection() {
        let (addr, broker) = fake_broker(|key, _version, corr| match key {
            18 => Some(api_versions_body(corr, 0, &[(18, 0, 2), (3, 1, 12)], true)),
            // Metadata: a reply to some other request.
            // (Metadata v12 is flexible: header v1 ends with no tagged fields.)
            3 if corr == 1 => Some([&(corr + 7).to_be_bytes()[..], &[0]].concat()),
            _ => None,
        });
        let mut conn = Connection::connect(&addr, &config()).unwrap();
        let req = MetadataRequest::default();
        let err = conn.call(12, &req, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("correlation id 8"), "{err}");
        assert!(conn.is_broken());
        let err = conn.call(12, &req, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        drop(conn);
        broker.join().unwrap();

        // A broker that never answers: Timeout within the call's timeout.
        let (addr, broker) = fake_broker(|key, _version, corr| match key {
            18 => Some(api_versions_body(corr, 0, &[(18, 0, 2), (3, 1, 12)], true)),
            _ => None,
        });
        let mut conn = Connection::connect(&addr, &config()).unwrap();
        let start = Instant::now();
        let err = conn.call(12, &req, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(conn.is_broken());
        drop(conn);
        broker.join().unwrap();
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (addr, broker) = fake_broker(|key, _version, corr| match key {
            18 => Some(api_versions_body(corr, 0, &[(18, 0, 2), (3, 1, 12)], true)),
            // Metadata v12 with a flexible header: the correlation id,
            // no tagged fields, then a body we never decode here.
            3 if corr == 3 => Some([&99i32.to_be_bytes()[..], &[0]].concat()),
            _ => Some([&corr.to_be_bytes()[..], &[0]].concat()),
        });
        let mut conn = Connection::connect(&addr, &config()).unwrap();
        let req = MetadataRequest::default();
        let t = Duration::from_secs(2);
        let sent: Vec<_> = (0..3).map(|_| conn.send(12, &req, t).unwrap()).collect();
        assert_eq!(conn.in_flight(), 3);
        let mut sent = sent.into_iter();
        let (first, second, third) = (
            sent.next().unwrap(),
            sent.next().unwrap(),
            sent.next().unwrap(),
        );
        // Replies are read oldest first: the third cannot jump the queue.
        let err = conn
            .receive_body(&third, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("out of order"), "{err}");
        assert!(conn.is_broken() && conn.in_flight() == 0);
        drop((first, second));
        drop(conn);
        broker.join().unwrap();

        // In order: each reply matches; a wrong id poisons the connection.
        let (addr, broker) = fake_broker(|key, _version, corr| match key {
            18 => Some(api_versions_body(corr, 0, &[(18, 0, 2), (3, 1, 12)], true)),
            3 if corr == 3 => Some([&99i32.to_be_bytes()[..], &[0]].concat()),
            _ => Some([&corr.to_be_bytes()[..], &[0]].concat()),
        });
        let mut conn = Connection::connect(&addr, &config()).unwrap();
        let sent: Vec<_> = (0..3).map(|_| conn.send(12, &req, t).unwrap()).collect();
        let mut sent = sent.into_iter();
        for _ in 0..2 {
            let s = sent.next().unwrap();
            assert!(conn.receive_body(&s, 1).is_ok());
        }
        assert_eq!(conn.in_flight(), 1);
        let err = conn
            .receive_body(&sent.next().unwrap(), 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("correlation id 99"), "{err}");
        assert!(conn.is_broken() && conn.in_flight() == 0);
        assert!(conn.send(12, &req, t).is_err());
        drop(conn);
        broker.join().unwrap();
    }

    /// A server that answers anything with `reply`, once.
    fn not_kafka(reply: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
            std::thread::sleep(Duration::from_millis(500));
        });
        addr
    }

    #[test]
    fn a_reply_from_something_else_says_what_it_probably_is() {
        let addr = not_kafka(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        let err = Connection::connect(&addr, &config())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"not a Kafka broker? the reply starts with "HTTP""#),
            "{err}"
        );
        assert!(err.contains(&addr), "{err}");

        // A TLS alert (fatal, protocol_version).
        let addr = not_kafka(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);
        let err = Connection::connect(&addr, &config())
            .unwrap_err()
            .to_string();
        assert!(err.contains("a TLS listener?"), "{err}");

        assert_eq!(not_kafka_hint([0x7f, 0xff, 0xff, 0xff]), "");
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let (addr, broker) = fake_broker(|key, _version, corr| match key {
            18 => Some(api_versions_body(corr, 0, &[(18, 0, 2), (3, 1, 12)], true)),
            // A 2 GiB frame length.
            _ => Some(vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1]),
        });
        let mut conn = Connection::connect(&addr, &config()).unwrap();
        let err = conn
            .call(12, &MetadataRequest::default(), Duration::from_secs(1))
            .unwrap_err();
        assert!(
            err.to_string().contains("reply frame length 2147483647"),
            "{err}"
        );
        assert!(conn.is_broken());
        drop(conn);
        broker.join().unwrap();
    }
}

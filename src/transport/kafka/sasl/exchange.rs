//! The SASL exchange on one connection: SaslHandshake v1 (the mechanism),
//! then SaslAuthenticate rounds carrying the mechanism's messages, all
//! before the deadline. Every refusal becomes [`Error::Auth`] naming the
//! mechanism, the broker and what the broker said; I/O errors and timeouts
//! stay what they are (the connection is then unusable anyway).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::scram::{Scram, ScramHash};
use super::{oauth, plain, Credentials, Sasl, SaslMechanism};
use crate::error::{Error, KafkaCode, Result};
use crate::transport::kafka::conn::Connection;
use crate::transport::kafka::errors::code_name;

/// UNSUPPORTED_SASL_MECHANISM: the handshake lists what the broker enables.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

/// Authenticates `conn` with `sasl` before `deadline`; returns the session
/// lifetime the broker granted (`None`: unlimited, or SaslAuthenticate v0).
pub(crate) fn authenticate(
    conn: &mut Connection,
    sasl: &Sasl,
    deadline: Instant,
) -> Result<Option<Duration>> {
    let mut ex = Exchange {
        conn,
        mechanism: sasl.mechanism(),
        deadline,
        lifetime: None,
    };
    ex.handshake()?;
    match &sasl.credentials {
        Credentials::Password {
            mechanism: SaslMechanism::Plain,
            username,
            password,
        } => {
            let msg = plain::message(username, password).map_err(|m| ex.fail(m))?;
            ex.round(msg)?;
        }
        Credentials::Password {
            mechanism,
            username,
            password,
        } => {
            let hash = match mechanism {
                SaslMechanism::ScramSha512 => ScramHash::Sha512,
                _ => ScramHash::Sha256,
            };
            let mut scram = Scram::new(hash, username, password).map_err(|m| ex.fail(m))?;
            let server_first = ex.round(scram.client_first())?;
            let client_final = scram.client_final(&server_first).map_err(|m| ex.fail(m))?;
            let server_final = ex.round(client_final)?;
            scram
                .verify_server_final(&server_final)
                .map_err(|m| ex.fail(m))?;
        }
        Credentials::OAuthBearer(provider) => {
            let token = provider
                .token()
                .map_err(|e| ex.fail(format!("the token provider failed: {e}")))?;
            let msg = oauth::initial_response(&token).map_err(|m| ex.fail(m))?;
            let challenge = ex.round(msg)?;
            if !challenge.is_empty() {
                // RFC 7628 §3.2.2: an error challenge (JSON status); the
                // client answers with a lone %x01 and the server fails the
                // exchange, usually with its own message.
                let status = String::from_utf8_lossy(&challenge).into_owned();
                let status = format!("the broker refused the token ({status})");
                return Err(match ex.round(vec![0x01]) {
                    Err(Error::Auth { message, .. }) => ex.fail(format!("{status}: {message}")),
                    Err(other) => other,
                    Ok(_) => ex.fail(status),
                });
            }
        }
    }
    Ok(ex.lifetime)
}

struct Exchange<'a> {
    conn: &'a mut Connection,
    mechanism: SaslMechanism,
    deadline: Instant,
    lifetime: Option<Duration>,
}

impl Exchange<'_> {
    fn fail(&self, message: impl Into<String>) -> Error {
        Error::Auth {
            mechanism: self.mechanism.as_str(),
            broker: self.conn.addr().to_string(),
            message: message.into(),
        }
    }

    fn left(&self, what: &str) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(format!(
                "{what} to {}: SASL {} authentication did not finish within the connect timeout",
                self.conn.addr(),
                self.mechanism
            )));
        }
        Ok(left)
    }

    fn handshake(&mut self) -> Result<()> {
        let version = self.conn.version(ApiKey::SaslHandshake)?;
        let mut req = SaslHandshakeRequest::default();
        req.mechanism = StrBytes::from_static_str(self.mechanism.as_str());
        let timeout = self.left("SaslHandshake")?;
        let resp = self.conn.call(version, &req, timeout)?;
        match resp.error_code {
            0 => Ok(()),
            UNSUPPORTED_SASL_MECHANISM => {
                let enabled: Vec<&str> = resp.mechanisms.iter().map(|m| &**m).collect();
                // Tansu without SASL storage lists the mechanism it refuses.
                let odd = if enabled.contains(&self.mechanism.as_str()) {
                    " (it lists the mechanism yet refuses it: is SASL configured on this listener?)"
                } else {
                    ""
                };
                Err(self.fail(format!(
                    "the broker does not enable {} (UNSUPPORTED_SASL_MECHANISM); it enables: {}{odd}",
                    self.mechanism,
                    if enabled.is_empty() {
                        "none".to_string()
                    } else {
                        enabled.join(", ")
                    }
                )))
            }
            code => Err(self.fail(format!("SaslHandshake: {}", KafkaCode::new(code)))),
        }
    }

    /// One SaslAuthenticate round: sends `auth_bytes`, returns the server's.
    fn round(&mut self, auth_bytes: Vec<u8>) -> Result<Bytes> {
        let version = self.conn.version(ApiKey::SaslAuthenticate)?;
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(auth_bytes);
        let timeout = self.left("SaslAuthenticate")?;
        let resp: SaslAuthenticateResponse = self.conn.call(version, &req, timeout)?;
        if resp.error_code != 0 {
            let said = resp
                .error_message
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(self.fail(format!(
                "{} ({}){said}",
                code_name(resp.error_code),
                resp.error_code
            )));
        }
        self.lifetime = u64::try_from(resp.session_lifetime_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Ok(resp.auth_bytes)
    }
}

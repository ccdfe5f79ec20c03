//! SASL authentication of broker connections: SaslHandshake, then
//! SaslAuthenticate rounds of one mechanism, right after ApiVersions on
//! every new connection (KIP-43, KIP-152), and re-authentication before the
//! broker's session lifetime ends (KIP-368).
//!
//! Files: `plain.rs`, `scram.rs` and `oauth.rs` build each mechanism's
//! messages (pure functions and state machines, tested against the RFC
//! vectors); `exchange.rs` carries them over a connection and turns
//! refusals into [`Error::Auth`]; `reauth.rs` decides when a connection
//! re-authenticates.

mod exchange;
mod oauth;
mod plain;
mod reauth;
mod scram;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};

pub(crate) use exchange::authenticate;
use oauth::CachedProvider;
pub use oauth::UnsecuredJwt;
pub(crate) use reauth::Session;

/// A SASL mechanism (`sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN` (RFC 4616): user name and password, in the clear under TLS.
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802, RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (RFC 7628, KIP-255): a bearer token from a
    /// [`TokenProvider`].
    OAuthBearer,
}

impl SaslMechanism {
    /// Kafka's name of the mechanism, e.g. `"SCRAM-SHA-512"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            "OAUTHBEARER" => Ok(SaslMechanism::OAuthBearer),
            _ => Err(Error::config(
                "sasl.mechanism",
                format!(
                    "{s:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER \
                     (GSSAPI/Kerberos is not supported)"
                ),
            )),
        }
    }
}

/// An OAUTHBEARER token and when it stops being valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer token (a JWT for most identity providers).
    pub value: String,
    /// When the token expires; the client asks its provider for a new one
    /// before then.
    pub expires_at: SystemTime,
    /// SASL extensions sent with the token (KIP-342), e.g. Confluent
    /// Cloud's `logicalCluster` and `identityPoolId`.
    pub extensions: Vec<(String, String)>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// Supplies OAUTHBEARER tokens: your identity provider's client, an AWS MSK
/// IAM signer, or a fixed token. Called synchronously, on the thread that
/// opens a connection, whenever a connection authenticates or
/// re-authenticates and the last token is near its expiry (80% of its
/// lifetime has passed, as the Java client's default refresh window); in
/// between, every connection of a transport reuses the last token.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kafka_retry::{KafkaConfig, Sasl, SecurityProtocol, Token, TokenProvider};
///
/// #[derive(Debug)]
/// struct FromMyIdp;
/// impl TokenProvider for FromMyIdp {
///     fn token(&self) -> kafka_retry::Result<Token> {
///         Ok(Token {
///             value: "eyJ...".to_string(), // ask the identity provider here
///             expires_at: SystemTime::now() + Duration::from_secs(3600),
///             extensions: vec![("logicalCluster".into(), "lkc-abc".into())],
///         })
///     }
/// }
/// let config = KafkaConfig::new("broker:9092")
///     .security_protocol(SecurityProtocol::SaslPlaintext)
///     .sasl(Sasl::oauthbearer(FromMyIdp));
/// # let _ = config;
/// ```
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A valid token, or an error saying why none can be had.
    fn token(&self) -> Result<Token>;
}

/// What a connection authenticates with: a mechanism and its credentials.
///
/// `Debug` never shows a password or token, and neither do errors or logs.
///
/// ```
/// use kafka_retry::{KafkaConfig, Sasl, SaslMechanism, SecurityProtocol};
/// let sasl = Sasl::with_password(SaslMechanism::ScramSha512, "alice", "s3cret")?;
/// assert!(!format!("{sasl:?}").contains("s3cret"));
/// let config = KafkaConfig::new("broker:9092")
///     .security_protocol(SecurityProtocol::SaslPlaintext)
///     .sasl(sasl);
/// assert!(config.validate().is_ok());
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Clone)]
pub struct Sasl {
    pub(crate) credentials: Credentials,
}

#[derive(Clone)]
pub(crate) enum Credentials {
    Password {
        mechanism: SaslMechanism,
        username: String,
        password: String,
    },
    OAuthBearer(CachedProvider),
}

impl Sasl {
    /// `PLAIN` with a user name and password.
    pub fn plain(username: impl Into<String>, password: impl Into<String>) -> Sasl {
        Sasl::password(SaslMechanism::Plain, username, password)
    }

    /// `SCRAM-SHA-256` with a user name and password.
    pub fn scram_sha256(username: impl Into<String>, password: impl Into<String>) -> Sasl {
        Sasl::password(SaslMechanism::ScramSha256, username, password)
    }

    /// `SCRAM-SHA-512` with a user name and password.
    pub fn scram_sha512(username: impl Into<String>, password: impl Into<String>) -> Sasl {
        Sasl::password(SaslMechanism::ScramSha512, username, password)
    }

    /// `OAUTHBEARER` with tokens from `provider`.
    pub fn oauthbearer(provider: impl TokenProvider + 'static) -> Sasl {
        Sasl {
            credentials: Credentials::OAuthBearer(CachedProvider::new(Arc::new(provider))),
        }
    }

    /// A password mechanism by name (`PLAIN`, `SCRAM-SHA-256`,
    /// `SCRAM-SHA-512`); `OAUTHBEARER` needs a provider and is refused.
    pub fn with_password(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Sasl> {
        if mechanism == SaslMechanism::OAuthBearer {
            return Err(Error::config(
                "sasl.mechanism",
                "OAUTHBEARER takes a token provider, not a password",
            ));
        }
        Ok(Sasl::password(mechanism, username, password))
    }

    fn password(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Sasl {
        Sasl {
            credentials: Credentials::Password {
                mechanism,
                username: username.into(),
                password: password.into(),
            },
        }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> SaslMechanism {
        match &self.credentials {
            Credentials::Password { mechanism, .. } => *mechanism,
            Credentials::OAuthBearer(_) => SaslMechanism::OAuthBearer,
        }
    }
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Credentials::Password {
                mechanism,
                username,
                ..
            } => f
                .debug_struct("Sasl")
                .field("mechanism", mechanism)
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::OAuthBearer(p) => f
                .debug_struct("Sasl")
                .field("mechanism", &SaslMechanism::OAuthBearer)
                .field("provider", p)
                .finish(),
        }
    }
}

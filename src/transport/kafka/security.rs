//! Which security a broker connection uses: `security.protocol` in the Java
//! client and librdkafka.

use crate::error::{Error, Result};

/// How connections to brokers are secured (`security.protocol`).
///
/// ```
/// use kafka_retry::SecurityProtocol;
/// assert!(SecurityProtocol::SaslSsl.uses_tls());
/// assert!(SecurityProtocol::SaslSsl.uses_sasl());
/// assert_eq!("SASL_SSL".parse::<SecurityProtocol>().unwrap(), SecurityProtocol::SaslSsl);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication (`PLAINTEXT`).
    #[default]
    Plaintext,
    /// TLS, optionally with a client certificate (`SSL`).
    Ssl,
    /// SASL over plain TCP (`SASL_PLAINTEXT`): credentials cross the network
    /// unencrypted with PLAIN; meant for trusted networks and tests.
    SaslPlaintext,
    /// SASL over TLS (`SASL_SSL`): what managed clusters use.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL after ApiVersions.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// The property value, e.g. `"SASL_SSL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = Error;

    /// Case-insensitive, as the Java client and librdkafka accept it.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(Error::config(
                "security.protocol",
                format!("{s:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
            )),
        }
    }
}

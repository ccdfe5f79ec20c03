//! OAUTHBEARER (RFC 7628, KIP-255, extensions KIP-342): the client initial
//! response, the token cache that calls the provider again before a token
//! expires, and [`UnsecuredJwt`], a provider of unsecured (`alg: none`)
//! tokens for tests and development brokers.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{Token, TokenProvider};
use crate::error::{Error, Result};

/// Separator of RFC 7628's key/value pairs (`kvsep`).
const SEP: char = '\x01';

/// `n,,\x01auth=Bearer <token>\x01[key=value\x01...]\x01`. `Err` names what
/// is wrong (never the token itself).
pub(crate) fn initial_response(token: &Token) -> std::result::Result<Vec<u8>, String> {
    let bad_value = |v: &str| v.chars().any(|c| c == SEP || c.is_control());
    if token.value.is_empty() || bad_value(&token.value) || token.value.contains(' ') {
        return Err("the token is empty or holds spaces or control characters".into());
    }
    let mut m = format!("n,,{SEP}auth=Bearer {}", token.value);
    for (key, value) in &token.extensions {
        // RFC 7628 §3.1: key = 1*(ALPHA); "auth" is the token's own key.
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) || key == "auth" {
            return Err(format!(
                "SASL extension name {key:?} must be letters only and not \"auth\""
            ));
        }
        if bad_value(value) {
            return Err(format!("SASL extension {key} holds a control character"));
        }
        m.push(SEP);
        m.push_str(key);
        m.push('=');
        m.push_str(value);
    }
    m.push(SEP);
    m.push(SEP);
    Ok(m.into_bytes())
}

/// A provider plus the last token it gave, shared by every connection of a
/// client (the [`Sasl`](super::Sasl) is cloned into each).
#[derive(Clone)]
pub(crate) struct CachedProvider {
    provider: Arc<dyn TokenProvider>,
    last: Arc<Mutex<Option<(Token, SystemTime)>>>,
}

impl fmt::Debug for CachedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.provider.fmt(f)
    }
}

impl CachedProvider {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>) -> CachedProvider {
        CachedProvider {
            provider,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The last token while less than 80% of its lifetime has passed (the
    /// Java client's `sasl.login.refresh.window.factor`), else a new one
    /// from the provider.
    pub(crate) fn token(&self) -> Result<Token> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        if let Some((token, fetched)) = last.as_ref() {
            let life = token
                .expires_at
                .duration_since(*fetched)
                .unwrap_or_default();
            if now < *fetched + life.mul_f64(0.8) {
                return Ok(token.clone());
            }
        }
        let token = self.provider.token()?;
        *last = Some((token.clone(), now));
        Ok(token)
    }
}

/// Unsecured JWS tokens (`{"alg":"none"}`, no signature) with a subject and
/// an expiry: what Kafka's default OAUTHBEARER validator accepts
/// (`OAuthBearerUnsecuredValidatorCallbackHandler`), for tests and
/// development brokers. Never use it against a production cluster: anyone
/// can make such a token.
///
/// ```
/// use std::time::Duration;
/// use kafka_retry::{Sasl, TokenProvider, UnsecuredJwt};
/// let jwt = UnsecuredJwt::new("alice").lifetime(Duration::from_secs(600));
/// assert!(jwt.token()?.value.ends_with('.'));
/// let sasl = Sasl::oauthbearer(jwt);
/// // librdkafka's `sasl.oauthbearer.config` syntax:
/// let jwt = UnsecuredJwt::from_config("principal=alice lifeSeconds=600 extension_traceId=1")?;
/// assert_eq!(jwt.token()?.extensions, vec![("traceId".to_string(), "1".to_string())]);
/// # let _ = sasl;
/// # Ok::<(), kafka_retry::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UnsecuredJwt {
    principal: String,
    principal_claim: String,
    scope: Vec<String>,
    scope_claim: String,
    lifetime: Duration,
    extensions: Vec<(String, String)>,
}

impl UnsecuredJwt {
    /// Tokens for `principal` (the `sub` claim), valid for an hour.
    pub fn new(principal: impl Into<String>) -> UnsecuredJwt {
        UnsecuredJwt {
            principal: principal.into(),
            principal_claim: "sub".into(),
            scope: Vec::new(),
            scope_claim: "scope".into(),
            lifetime: Duration::from_secs(3600),
            extensions: Vec::new(),
        }
    }

    /// How long each new token is valid. Defaults to 1 h.
    pub fn lifetime(mut self, lifetime: Duration) -> UnsecuredJwt {
        self.lifetime = lifetime;
        self
    }

    /// A SASL extension sent with every token (KIP-342). Defaults to none.
    pub fn extension(mut self, key: impl Into<String>, value: impl Into<String>) -> UnsecuredJwt {
        self.extensions.push((key.into(), value.into()));
        self
    }

    /// From librdkafka's `sasl.oauthbearer.config`: space-separated
    /// `principal=<sub>` (required), `principalClaimName=`, `scope=` (comma
    /// separated), `scopeClaimName=`, `lifeSeconds=` (default 3600) and
    /// `extension_<name>=<value>`.
    pub fn from_config(config: &str) -> Result<UnsecuredJwt> {
        let field = "sasl.oauthbearer.config";
        let mut jwt = UnsecuredJwt::new("");
        for pair in config.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::config(field, format!("{pair:?} is not key=value")))?;
            match k {
                "principal" => jwt.principal = v.to_string(),
                "principalClaimName" => jwt.principal_claim = v.to_string(),
                "scope" => jwt.scope = v.split(',').map(str::to_string).collect(),
                "scopeClaimName" => jwt.scope_claim = v.to_string(),
                "lifeSeconds" => {
                    let secs = v.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                        Error::config(field, format!("lifeSeconds={v:?} is not a positive number"))
                    })?;
                    jwt.lifetime = Duration::from_secs(secs);
                }
                _ => match k.strip_prefix("extension_") {
                    Some(name) if !name.is_empty() => {
                        jwt.extensions.push((name.to_string(), v.to_string()))
                    }
                    _ => {
                        return Err(Error::config(
                            field,
                            format!(
                                "unknown key {k:?} (known: principal, principalClaimName, scope, \
                                 scopeClaimName, lifeSeconds, extension_<name>)"
                            ),
                        ))
                    }
                },
            }
        }
        if jwt.principal.is_empty() {
            return Err(Error::config(field, "principal=<name> is required"));
        }
        Ok(jwt)
    }
}

impl TokenProvider for UnsecuredJwt {
    fn token(&self) -> Result<Token> {
        let now = SystemTime::now();
        let iat = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let exp = iat + self.lifetime.as_secs_f64();
        let mut claims = format!(
            "{{{}:{},\"iat\":{iat:.3},\"exp\":{exp:.3}",
            json_string(&self.principal_claim),
            json_string(&self.principal)
        );
        if !self.scope.is_empty() {
            let scope: Vec<String> = self.scope.iter().map(|s| json_string(s)).collect();
            claims.push_str(&format!(
                ",{}:[{}]",
                json_string(&self.scope_claim),
                scope.join(",")
            ));
        }
        claims.push('}');
        let value = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        );
        Ok(Token {
            value,
            expires_at: now + self.lifetime,
            extensions: self.extensions.clone(),
        })
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn token(value: &str, ext: &[(&str, &str)]) -> Token {
        Token {
            value: value.into(),
            expires_at: SystemTime::now() + Duration::from_secs(60),
            extensions: ext
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// RFC 7628 §3.1 and Kafka's `OAuthBearerClientInitialResponse`.
    #[test]
    fn initial_response_with_and_without_extensions() {
        assert_eq!(
            initial_response(&token("abc.def.", &[])).unwrap(),
            b"n,,\x01auth=Bearer abc.def.\x01\x01"
        );
        assert_eq!(
            initial_response(&token("t", &[("logicalCluster", "lkc-1"), ("pool", "p")])).unwrap(),
            b"n,,\x01auth=Bearer t\x01logicalCluster=lkc-1\x01pool=p\x01\x01"
        );
        assert!(initial_response(&token("", &[])).is_err());
        assert!(initial_response(&token("a\x01b", &[])).is_err());
        let err = initial_response(&token("secret-token", &[("auth", "x")])).unwrap_err();
        assert!(
            err.contains("auth") && !err.contains("secret-token"),
            "{err}"
        );
        assert!(initial_response(&token("t", &[("a-b", "x")])).is_err());
    }

    #[test]
    fn unsecured_jwt_claims() {
        let t = UnsecuredJwt::new("al\"ice")
            .lifetime(Duration::from_secs(5))
            .token()
            .unwrap();
        let parts: Vec<&str> = t.value.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
            br#"{"alg":"none"}"#
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "al\"ice");
        let (iat, exp) = (
            claims["iat"].as_f64().unwrap(),
            claims["exp"].as_f64().unwrap(),
        );
        assert!((exp - iat - 5.0).abs() < 0.01);
        assert_eq!(parts[2], "");

        let j = UnsecuredJwt::from_config("principal=bob scope=a,b lifeSeconds=7 extension_x=1")
            .unwrap();
        assert_eq!(j.lifetime, Duration::from_secs(7));
        let t = j.token().unwrap();
        assert_eq!(t.extensions, vec![("x".to_string(), "1".to_string())]);
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.value.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["scope"], serde_json::json!(["a", "b"]));
        assert!(UnsecuredJwt::from_config("lifeSeconds=7").is_err());
        let err = UnsecuredJwt::from_config("principal=a lifetime=3").unwrap_err();
        assert!(err.to_string().contains("lifetime"), "{err}");
    }

    #[derive(Debug)]
    struct Counting(AtomicU32, Duration);
    impl TokenProvider for Counting {
        fn token(&self) -> Result<Token> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Token {
                value: format!("t{n}"),
                expires_at: SystemTime::now() + self.1,
                extensions: Vec::new(),
            })
        }
    }

    #[test]
    fn the_cache_asks_again_near_expiry() {
        let p = Arc::new(Counting(AtomicU32::new(0), Duration::from_millis(500)));
        let cache = CachedProvider::new(p.clone());
        assert_eq!(cache.token().unwrap().value, "t0");
        assert_eq!(cache.token().unwrap().value, "t0");
        std::thread::sleep(Duration::from_millis(420)); // past 80% of 500 ms
        assert_eq!(cache.token().unwrap().value, "t1");
        assert_eq!(p.0.load(Ordering::SeqCst), 2);
    }
}

//! The SASL keys (`sasl.mechanism`, credentials, `sasl.jaas.config`,
//! `sasl.oauthbearer.config`) resolved into a [`Sasl`].

use super::super::sasl::{Sasl, SaslMechanism, UnsecuredJwt};
use std::time::Duration;

use super::reason_of;
use crate::error::{Error, Result};

/// What the SASL keys said, resolved after every key is read (their order
/// does not matter).
#[derive(Default)]
pub(super) struct SaslParts {
    pub(super) mechanism: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) jaas: Option<(String, Option<String>)>,
    pub(super) oauthbearer_config: Option<String>,
    pub(super) unsecure_jwt: bool,
}

impl SaslParts {
    /// The [`Sasl`] these keys describe, if any.
    pub(super) fn resolve(self) -> Result<Option<Sasl>> {
        let from_jaas = match &self.jaas {
            Some((text, origin)) => Some(jaas(text).map_err(|reason| {
                let o = origin
                    .as_ref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default();
                Error::config("sasl.jaas.config", format!("{reason}{o}"))
            })?),
            None => None,
        };
        let mechanism = match (&self.mechanism, &from_jaas) {
            (Some(m), _) => Some(
                m.parse::<SaslMechanism>()
                    .map_err(|e| Error::config("sasl.mechanism", reason_of(e)))?,
            ),
            // Java's default mechanism is GSSAPI; a PLAIN login module
            // says what is meant.
            (None, Some(j)) if j.module == JaasModule::Plain => Some(SaslMechanism::Plain),
            (None, Some(j)) if j.module == JaasModule::Scram => {
                return Err(Error::config(
                    "sasl.mechanism",
                    "sasl.jaas.config uses ScramLoginModule: set sasl.mechanism to \
                     SCRAM-SHA-256 or SCRAM-SHA-512",
                ))
            }
            (None, Some(_)) => Some(SaslMechanism::OAuthBearer),
            (None, None) if self.username.is_some() || self.password.is_some() => {
                return Err(Error::config(
                    "sasl.mechanism",
                    "sasl.username/sasl.password are set but no sasl.mechanism \
                     (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                ))
            }
            (None, None) => None,
        };
        let Some(mechanism) = mechanism else {
            return Ok(None);
        };
        if mechanism == SaslMechanism::OAuthBearer {
            return oauthbearer(&self, from_jaas.as_ref());
        }
        let jaas_user = from_jaas.as_ref().and_then(|j| j.username.clone());
        let jaas_pass = from_jaas.as_ref().and_then(|j| j.password.clone());
        let pick =
            |field: &'static str, direct: Option<String>, jaas: Option<String>| -> Result<String> {
                match (direct, jaas) {
                    (Some(d), Some(j)) if d != j => Err(Error::config(
                        field,
                        format!("differs from the one in sasl.jaas.config: set {field} only once"),
                    )),
                    (Some(d), _) => Ok(d),
                    (None, Some(j)) => Ok(j),
                    (None, None) => Err(Error::config(
                        field,
                        format!(
                            "SASL {mechanism} needs it (or username=\"..\" password=\"..\" in \
                         sasl.jaas.config)"
                        ),
                    )),
                }
            };
        let user = pick("sasl.username", self.username, jaas_user)?;
        let pass = pick("sasl.password", self.password, jaas_pass)?;
        Sasl::with_password(mechanism, user, pass).map(Some)
    }
}

/// OAUTHBEARER from properties: only unsecured tokens (`alg: none`, for
/// development brokers) can come from a file, as librdkafka's
/// `sasl.oauthbearer.config` with `enable.sasl.oauthbearer.unsecure.jwt=true`
/// or Java's `OAuthBearerLoginModule` with `unsecuredLoginStringClaim_sub`.
/// Real tokens come from code: `None` here, and the application adds
/// `.sasl(Sasl::oauthbearer(provider))` (until then `validate` says SASL
/// credentials are missing).
fn oauthbearer(parts: &SaslParts, jaas: Option<&Jaas>) -> Result<Option<Sasl>> {
    let field = "sasl.oauthbearer.config";
    if let Some(conf) = &parts.oauthbearer_config {
        if !parts.unsecure_jwt {
            return Err(Error::config(
                field,
                "builds unsecured tokens (no signature: development brokers only), which \
                 needs enable.sasl.oauthbearer.unsecure.jwt=true as in librdkafka; for real \
                 tokens leave it out and pass a TokenProvider with \
                 KafkaConfig::sasl(Sasl::oauthbearer(..)) after from_properties",
            ));
        }
        return Ok(Some(Sasl::oauthbearer(UnsecuredJwt::from_config(conf)?)));
    }
    let Some(jaas) = jaas.filter(|j| !j.options.is_empty()) else {
        return Ok(None);
    };
    let mut sub = None;
    let mut jwt_lifetime = None;
    let mut extensions = Vec::new();
    for (k, v) in &jaas.options {
        match k.as_str() {
            "unsecuredLoginStringClaim_sub" => sub = Some(v.clone()),
            "unsecuredLoginLifetimeSeconds" => {
                let secs = v.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    Error::config(
                        "sasl.jaas.config",
                        format!("unsecuredLoginLifetimeSeconds={v:?} is not a positive number"),
                    )
                })?;
                jwt_lifetime = Some(Duration::from_secs(secs));
            }
            _ => match k.strip_prefix("unsecuredLoginExtension_") {
                Some(name) if !name.is_empty() => extensions.push((name.to_string(), v.clone())),
                _ => {
                    return Err(Error::config(
                        "sasl.jaas.config",
                        format!(
                            "OAuthBearerLoginModule option `{k}` is not supported (only the \
                             unsecured-token options unsecuredLoginStringClaim_sub, \
                             unsecuredLoginLifetimeSeconds, unsecuredLoginExtension_<name>); \
                             for real tokens pass a TokenProvider with \
                             KafkaConfig::sasl(Sasl::oauthbearer(..))"
                        ),
                    ))
                }
            },
        }
    }
    let sub = sub.ok_or_else(|| {
        Error::config(
            "sasl.jaas.config",
            "OAuthBearerLoginModule without unsecuredLoginStringClaim_sub: for real tokens \
             pass a TokenProvider with KafkaConfig::sasl(Sasl::oauthbearer(..))",
        )
    })?;
    let mut jwt = UnsecuredJwt::new(sub);
    if let Some(l) = jwt_lifetime {
        jwt = jwt.lifetime(l);
    }
    for (k, v) in extensions {
        jwt = jwt.extension(k, v);
    }
    Ok(Some(Sasl::oauthbearer(jwt)))
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum JaasModule {
    Plain,
    Scram,
    OAuthBearer,
}

/// A parsed `sasl.jaas.config`.
#[derive(Debug)]
pub(super) struct Jaas {
    pub(super) module: JaasModule,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    /// Other options (`unsecuredLoginStringClaim_sub`, ...).
    pub(super) options: Vec<(String, String)>,
}

/// `<LoginModule class> <flag> key="value" key='value' key=value ... ;`.
/// Errors never repeat the text (it holds a password).
pub(super) fn jaas(text: &str) -> std::result::Result<Jaas, String> {
    let text = text.trim();
    let (class, rest) = text
        .split_once(char::is_whitespace)
        .ok_or("expected `<LoginModule> required username=\"..\" password=\"..\";`")?;
    let module = match class.rsplit('.').next().unwrap_or(class) {
        "PlainLoginModule" => JaasModule::Plain,
        "ScramLoginModule" => JaasModule::Scram,
        "OAuthBearerLoginModule" => JaasModule::OAuthBearer,
        "IAMLoginModule" => {
            return Err("AWS MSK IAM (IAMLoginModule) is not built in: use \
                        sasl.mechanism=OAUTHBEARER with a TokenProvider that signs MSK \
                        IAM tokens, passed with KafkaConfig::sasl(Sasl::oauthbearer(..))"
                .to_string())
        }
        "Krb5LoginModule" => {
            return Err("Kerberos (Krb5LoginModule, GSSAPI) is not supported".to_string())
        }
        other => {
            return Err(format!(
                "login module `{other}` is not supported (PlainLoginModule, \
                 ScramLoginModule, OAuthBearerLoginModule are)"
            ))
        }
    };
    let rest = rest.trim_start();
    let (flag, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let flag = flag.trim_end_matches(';');
    if !matches!(flag, "required" | "requisite" | "sufficient" | "optional") {
        return Err(format!(
            "expected a control flag (`required`) after the login module, found `{flag}`"
        ));
    }
    let mut jaas = Jaas {
        module,
        username: None,
        password: None,
        options: Vec::new(),
    };
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with(';') {
            break;
        }
        let (key, after) = rest
            .split_once('=')
            .ok_or("expected key=value options after the control flag")?;
        let key = key.trim().to_string();
        let after = after.trim_start();
        let (value, next) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let mut value = String::new();
                let mut end = None;
                let mut chars = after[1..].char_indices();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        c if c == q => {
                            end = Some(1 + i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let end =
                    end.ok_or_else(|| format!("the value of `{key}` has no closing quote"))?;
                (value, &after[end..])
            }
            _ => {
                let end = after
                    .find(|c: char| c.is_whitespace() || c == ';')
                    .unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        match key.as_str() {
            "username" => jaas.username = Some(value),
            "password" => jaas.password = Some(value),
            _ => jaas.options.push((key, value)),
        }
        rest = next;
    }
    Ok(jaas)
}

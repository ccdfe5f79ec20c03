//! SCRAM-SHA-256 and SCRAM-SHA-512 client (RFC 5802, RFC 7677), as Kafka
//! uses them: no channel binding (`n,,`, so `c=biws`), iteration counts of
//! at least 4096, and the server signature checked before the exchange
//! counts as a success.
//!
//! The state machine is pure (bytes in, bytes out) so the RFC vectors test
//! it without a broker; `exchange.rs` carries its messages in
//! SaslAuthenticate requests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Fewest PBKDF2 iterations we accept from a server (RFC 7677 §4 and
/// Kafka's own minimum): fewer would make a stolen server-first cheap to
/// brute-force.
pub(crate) const MIN_ITERATIONS: u32 = 4096;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// RFC 5802's `Hi()`: PBKDF2 with HMAC of this hash.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// One SCRAM exchange, client side: [`Scram::client_first`], then
/// [`Scram::client_final`] with the server-first message, then
/// [`Scram::verify_server_final`].
pub(crate) struct Scram {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
    /// The server signature we expect, once client-final is built.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// A new exchange with a random client nonce (24 random bytes, base64:
    /// printable, no `,`).
    pub(crate) fn new(hash: ScramHash, username: &str, password: &str) -> Result<Scram, String> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| format!("no random source for the nonce: {e}"))?;
        Ok(Scram::with_nonce(
            hash,
            username,
            password,
            &STANDARD.encode(raw),
        ))
    }

    /// A new exchange with a fixed nonce (tests against the RFC vectors).
    pub(crate) fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Scram {
        Scram {
            hash,
            password: password.to_string(),
            nonce: nonce.to_string(),
            client_first_bare: format!("n={},r={nonce}", escape_username(username)),
            server_signature: None,
        }
    }

    /// `n,,n=<user>,r=<nonce>`: no channel binding, no authorization id.
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Parses the server-first message and returns client-final
    /// (`c=biws,r=<nonce>,p=<proof>`). `Err` says what is wrong with the
    /// server's message (it never contains the password or the proof).
    pub(crate) fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first message is not UTF-8".to_string())?;
        if let Some(e) = server_first.strip_prefix("e=") {
            return Err(format!("server refused the client-first message: {e}"));
        }
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for (i, attr) in server_first.split(',').enumerate() {
            match attr.split_once('=') {
                Some(("m", _)) if i == 0 => {
                    return Err("server-first asks for a mandatory extension (m=)".into())
                }
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => {
                    salt = Some(
                        STANDARD
                            .decode(v)
                            .map_err(|_| "server-first salt is not base64".to_string())?,
                    )
                }
                Some(("i", v)) => {
                    iterations = Some(v.parse::<u32>().map_err(|_| {
                        format!("server-first iteration count {v:?} is not a number")
                    })?)
                }
                _ => {} // extensions we do not know
            }
        }
        let nonce = nonce.ok_or("server-first message has no nonce (r=)")?;
        let salt = salt.ok_or("server-first message has no salt (s=)")?;
        let iterations = iterations.ok_or("server-first message has no iteration count (i=)")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err("server nonce does not extend the client nonce".into());
        }
        if iterations < MIN_ITERATIONS {
            return Err(format!(
                "server asks for {iterations} iterations, fewer than the minimum {MIN_ITERATIONS}"
            ));
        }
        let h = self.hash;
        let salted = h.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.h(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: `v=<signature>` must match what the
    /// password gives; `e=<error>` is a failure whatever the Kafka error
    /// code said.
    pub(crate) fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(server_final);
        let first = text.split(',').next().unwrap_or("");
        if let Some(e) = first.strip_prefix("e=") {
            return Err(format!("the broker refused the proof (server-final e={e})"));
        }
        let Some(v) = first.strip_prefix("v=") else {
            return Err("server-final message has no signature (v=)".into());
        };
        let expected = self
            .server_signature
            .as_ref()
            .ok_or("server-final before client-final (bug)")?;
        let got = STANDARD
            .decode(v)
            .map_err(|_| "server signature is not base64".to_string())?;
        if !constant_time_eq(&got, expected) {
            return Err(
                "the server signature does not verify: the broker does not know the password \
                 (or someone is in between)"
                    .into(),
            );
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 5802 §5.1: `=` becomes `=3D` and `,` becomes `=2C` in a user name.
/// (Kafka's own client does no further SASLprep; neither do we.)
pub(crate) fn escape_username(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    /// RFC 7677 §3, the SCRAM-SHA-256 example.
    #[test]
    fn rfc7677_sha256_vector() {
        let mut s = Scram::with_nonce(ScramHash::Sha256, "user", "pencil", NONCE);
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = s.client_final(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    /// The same flow with SHA-512 (RFC 5802's flow; no RFC has a SHA-512
    /// vector, these values come from Python's hashlib/hmac).
    #[test]
    fn sha512_flow() {
        let mut s = Scram::with_nonce(ScramHash::Sha512, "user", "pencil", NONCE);
        let fin = s.client_final(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ=="
        );
        s.verify_server_final(
            b"v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==",
        )
        .unwrap();
    }

    #[test]
    fn bad_server_messages_are_refused() {
        let fresh = || Scram::with_nonce(ScramHash::Sha256, "user", "pencil", NONCE);
        let err = |server_first: &str| fresh().client_final(server_first.as_bytes()).unwrap_err();
        // A nonce that does not start with ours (or does not extend it).
        assert!(err("r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").contains("nonce"));
        assert!(err("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").contains("nonce"));
        // Too few iterations.
        let few = err("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095");
        assert!(few.contains("4095") && few.contains("4096"), "{few}");
        assert!(err("r=rOprNGfwEbeRWgbNEkqOxyz,s=!!,i=4096").contains("salt"));
        assert!(err("r=rOprNGfwEbeRWgbNEkqOxyz,i=4096").contains("salt"));
        assert!(err("m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22Z,i=4096").contains("mandatory"));
        assert!(err("e=unknown-user").contains("unknown-user"));

        // A server-final that does not verify, or carries e=.
        let mut s = fresh();
        s.client_final(SERVER_FIRST.as_bytes()).unwrap();
        let bad = s
            .verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(bad.contains("does not verify"), "{bad}");
        let e = s.verify_server_final(b"e=invalid-proof").unwrap_err();
        assert!(e.contains("invalid-proof"), "{e}");
        assert!(s.verify_server_final(b"").is_err());
    }

    #[test]
    fn user_names_are_escaped_and_nonces_random() {
        assert_eq!(escape_username("a=b,c"), "a=3Db=2Cc");
        let s = Scram::with_nonce(ScramHash::Sha256, "a=b,c", "p", "n");
        assert_eq!(s.client_first(), b"n,,n=a=3Db=2Cc,r=n");
        let a = Scram::new(ScramHash::Sha512, "u", "p").unwrap();
        let b = Scram::new(ScramHash::Sha512, "u", "p").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert!(a.nonce.len() >= 24 && !a.nonce.contains(','));
    }
}

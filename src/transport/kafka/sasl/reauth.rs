//! When a connection re-authenticates (KIP-368).
//!
//! A broker that enforces `connections.max.reauth.ms` (or, for
//! OAUTHBEARER, the token's expiry) answers SaslAuthenticate v1+ with a
//! session lifetime; past it, the broker closes the connection at its next
//! request. We run a new SaslHandshake + SaslAuthenticate on the same
//! connection at a random moment between 85% and 95% of the lifetime, as
//! the Java client does (the spread keeps a client's many connections from
//! re-authenticating at once).
//!
//! Invariant kept by `Connection::send`: the exchange starts only when no
//! request is in flight on the connection (so no reply can arrive in the
//! middle of it), and no other request is written until it ends (it runs
//! synchronously inside `send`). A pipelining user (the producer's sender)
//! checks `Connection::reauth_due` before writing and first reads the
//! replies it is owed.

use std::time::{Duration, Instant};

use super::Sasl;

/// The SASL state of an authenticated connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) sasl: Sasl,
    /// Time allowed for one (re-)authentication: the connect timeout.
    pub(crate) timeout: Duration,
    /// When to re-authenticate; `None`: the broker set no lifetime.
    reauth_at: Option<Instant>,
    /// Re-authentications done on this connection.
    pub(crate) reauths: u64,
}

impl Session {
    /// A session that just authenticated, the broker granting `lifetime`.
    pub(crate) fn new(sasl: Sasl, timeout: Duration, lifetime: Option<Duration>) -> Session {
        Session {
            sasl,
            timeout,
            reauth_at: lifetime.map(reauth_point),
            reauths: 0,
        }
    }

    /// After a successful re-authentication granting `lifetime`.
    pub(crate) fn renewed(&mut self, lifetime: Option<Duration>) {
        self.reauth_at = lifetime.map(reauth_point);
        self.reauths += 1;
    }

    /// Whether the time to re-authenticate has come.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.reauth_at.is_some_and(|t| now >= t)
    }
}

/// Now plus 85% to 95% of `lifetime`.
fn reauth_point(lifetime: Duration) -> Instant {
    let spread = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    Instant::now() + lifetime.mul_f64(0.85 + 0.10 * spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_between_85_and_95_percent() {
        let sasl = Sasl::plain("u", "p");
        let start = Instant::now();
        let s = Session::new(
            sasl.clone(),
            Duration::from_secs(1),
            Some(Duration::from_secs(100)),
        );
        let at = s.reauth_at.unwrap() - start;
        assert!(
            at >= Duration::from_secs(85) && at <= Duration::from_millis(95_100),
            "{at:?}"
        );
        assert!(!s.due(start + Duration::from_secs(84)));
        assert!(s.due(start + Duration::from_secs(96)));
        let never = Session::new(sasl, Duration::from_secs(1), None);
        assert!(!never.due(start + Duration::from_secs(1_000_000)));
    }
}

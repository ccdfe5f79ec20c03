//! The connection to a group's coordinator: found with FindCoordinator,
//! dropped and found again when the retry driver says so.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::{ApiKey, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::super::client::Client;
use super::super::config::KafkaConfig;
use super::super::conn::{Connection, KafkaRequest};
use super::super::errors::check;
use super::super::retry::{classify, Action};
use crate::error::{Error, Result};

/// A lazily (re)discovered connection to the group coordinator.
pub(super) struct Coordinator {
    client: Arc<Client>,
    /// The client's settings with the consumer's client id: brokers build
    /// member ids from it and show it in group listings.
    config: KafkaConfig,
    group: String,
    conn: Option<Connection>,
}

impl Coordinator {
    /// `client_id` `None` (or empty) keeps the transport's client id.
    pub(super) fn new(client: Arc<Client>, group: String, client_id: Option<&str>) -> Self {
        let mut config = client.config().clone();
        if let Some(id) = client_id.filter(|id| !id.is_empty()) {
            config.client_id = id.to_string();
        }
        Coordinator {
            client,
            config,
            group,
            conn: None,
        }
    }

    /// Forget the coordinator (after 15/16 or a broken connection).
    pub(super) fn reset(&mut self) {
        self.conn = None;
    }

    /// The remedy for a failed group request, for the retry driver: drops
    /// the connection when the error calls for a reconnect or a new
    /// coordinator; returns [`classify`]'s action.
    pub(super) fn recover(&mut self, e: &Error) -> Action {
        let action = classify(e);
        if matches!(action, Action::Reconnect | Action::Rediscover) {
            self.reset();
        }
        action
    }

    fn conn(&mut self) -> Result<&mut Connection> {
        let usable = matches!(&self.conn, Some(c) if !c.is_broken());
        if !usable {
            self.conn = None;
            let addr = find_coordinator(&self.client, &self.group)?;
            log::debug!("group {}: coordinator at {addr}", self.group);
            self.conn = Some(Connection::connect(&addr, &self.config)?);
        }
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(Error::Protocol("coordinator connection vanished".into())),
        }
    }

    /// Sends the request `build(version)` at the negotiated version; returns
    /// the version (replies differ per version) and the reply. A failed call
    /// drops a broken connection so the next one rediscovers the coordinator.
    pub(super) fn call<R: KafkaRequest>(
        &mut self,
        timeout: Duration,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response)> {
        let conn = self.conn()?;
        let version = conn.version(R::KEY)?;
        let req = build(version);
        match conn.call(version, &req, timeout) {
            Ok(resp) => Ok((version, resp)),
            Err(e) => {
                if conn.is_broken() {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }
}

/// Address (`host:port`) of `group`'s coordinator, asked of any broker.
fn find_coordinator(client: &Client, group: &str) -> Result<String> {
    let mut conn = client.connect_any()?;
    let version = conn.version(ApiKey::FindCoordinator)?;
    let mut req = FindCoordinatorRequest::default();
    req.key_type = 0;
    // v4+ batches keys; the answer moves into `coordinators[]`.
    if version >= 4 {
        req.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
    } else {
        req.key = StrBytes::from_string(group.to_string());
    }
    let resp = conn.call(version, &req, client.config().request_timeout)?;
    let ctx = format!("FindCoordinator {group}");
    let (code, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .iter()
            .find(|c| &*c.key == group)
            .or_else(|| resp.coordinators.first())
            .ok_or_else(|| Error::Protocol(format!("{ctx}: reply names no coordinator")))?;
        (c.error_code, c.host.to_string(), c.port)
    } else {
        (resp.error_code, resp.host.to_string(), resp.port)
    };
    check(&ctx, code)?;
    if host.is_empty() || !(1..=65535).contains(&port) {
        return Err(Error::Protocol(format!(
            "{ctx}: coordinator address {host:?}:{port} is not usable"
        )));
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

pub(super) fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// A duration as the i32 milliseconds of a request field.
pub(super) fn ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

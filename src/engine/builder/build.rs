//! [`EngineBuilder::build`]: validates the settings, creates the retry and
//! dead-letter topics, and starts the engine's threads.

#[allow(unused_imports)] // the parent's imports, some used only there
use super::*;

impl EngineBuilder {
    /// Validates, creates missing retry and dead-letter topics, and starts
    /// the consumer, worker and relay threads. A bad setting is an
    /// [`Error::Config`] naming its field.
    ///
    /// ```
    /// use kafka_retry::{Engine, Error, MemoryBroker, Outcome};
    /// let err = Engine::builder(MemoryBroker::new())
    ///     .group_id("my billing")
    ///     .topics(["orders"])
    ///     .handler(|_r| Outcome::Done)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::Config { field: "group_id", .. }), "{err}");
    /// ```
    pub fn build(self) -> Result<Engine> {
        let group_id = match &self.group_id {
            Some(g) if !g.trim().is_empty() => g.clone(),
            _ => {
                return Err(Error::config(
                    "group_id",
                    "is required and must not be empty",
                ))
            }
        };
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::config(
                "topics",
                "at least one non-empty topic is required",
            ));
        }
        for t in &self.topics {
            check_topic("topics", t)?;
        }
        let handler = self
            .handler
            .clone()
            .ok_or_else(|| Error::config("handler", "is required"))?;
        if self.workers == 0 || self.workers > 1024 {
            return Err(Error::config(
                "workers",
                format!("{} is outside 1..=1024", self.workers),
            ));
        }
        self.policy.validate()?;
        if self.commit_interval.is_zero() {
            return Err(Error::config(
                "commit_interval",
                "must be greater than zero",
            ));
        }
        if self.revoke_timeout >= self.rebalance_timeout {
            return Err(Error::config(
                "revoke_timeout",
                format!(
                    "{:?} must be shorter than rebalance_timeout {:?}",
                    self.revoke_timeout, self.rebalance_timeout
                ),
            ));
        }
        if self.max_parked == 0 {
            return Err(Error::config("max_parked", "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(Error::config("queue_capacity", "must be at least 1"));
        }
        if self.max_poll_records == 0 {
            return Err(Error::config("max_poll_records", "must be at least 1"));
        }
        if let Some(l) = &self.dead_letter_limit {
            if l.limit > 1_000_000 {
                return Err(Error::config(
                    "dead_letter_limit",
                    format!("limit {} is above 1,000,000", l.limit),
                ));
            }
            if l.window.is_zero() {
                return Err(Error::config(
                    "dead_letter_limit",
                    "window must be above zero",
                ));
            }
            if l.cool_down.is_some_and(|d| d.is_zero()) {
                return Err(Error::config(
                    "dead_letter_limit",
                    "cool_down must be above zero",
                ));
            }
        }
        let retry_topic = match &self.retry_topic {
            Some(t) => {
                check_topic("retry_topic", t)?;
                t.clone()
            }
            None => {
                let t = format!("{group_id}-retry");
                check_derived_topic(&group_id, "retry topic", "retry_topic(...)", &t)?;
                t
            }
        };
        let dead_letter_topic = match &self.dead_letter_topic {
            Some(Some(t)) => {
                check_topic("dead_letter_topic", t)?;
                Some(t.clone())
            }
            Some(None) => None,
            None => {
                let t = format!("{group_id}-dlt");
                check_derived_topic(
                    &group_id,
                    "dead-letter topic",
                    "dead_letter_topic(...) or no_dead_letter_topic()",
                    &t,
                )?;
                Some(t)
            }
        };
        if self.topics.contains(&retry_topic) {
            return Err(Error::config(
                "retry_topic",
                "must not be one of the origin topics",
            ));
        }
        if let Some(d) = &dead_letter_topic {
            if d == &retry_topic || self.topics.contains(d) {
                return Err(Error::config(
                    "dead_letter_topic",
                    "must differ from the retry topic and the origin topics",
                ));
            }
        }
        let relay_group_id = match &self.relay_group_id {
            Some(g) if g.trim().is_empty() => {
                return Err(Error::config("relay_group_id", "must not be empty"))
            }
            Some(g) if *g == group_id => {
                return Err(Error::config(
                    "relay_group_id",
                    format!("must differ from group_id `{group_id}`"),
                ))
            }
            Some(g) => g.clone(),
            None => format!("{group_id}-relay"),
        };
        if self.key_order == KeyOrder::Kept && self.redelivery != Redelivery::Private {
            return Err(Error::config(
                "key_order",
                "KeyOrder::Kept requires redelivery(Redelivery::Private): a record written back \
                 to its origin topic would land behind the later records of its key",
            ));
        }
        if let Some(p) = self.topic_partitions.filter(|&p| p < 1) {
            return Err(Error::config(
                "topic_partitions",
                format!("{p} is not at least 1"),
            ));
        }
        let mut max_partitions = None;
        for t in &self.topics {
            match self.transport.partition_count(t)? {
                Some(n) => max_partitions = Some(max_partitions.unwrap_or(0).max(n)),
                None => match self.missing_topics {
                    MissingTopics::Fail => return Err(Error::UnknownTopic(t.clone())),
                    MissingTopics::Wait => log::warn!(
                        "{group_id}: origin topic {t} does not exist; its records are handled once it is created"
                    ),
                },
            }
        }
        let partitions = self.topic_partitions.or(max_partitions).unwrap_or(1);
        for t in std::iter::once(&retry_topic).chain(dead_letter_topic.iter()) {
            if self.transport.partition_count(t)?.is_none() {
                log::info!("creating topic {t} with {partitions} partitions");
                self.transport
                    .create_topic(t, partitions, self.replication_factor)?;
            }
        }
        check_cleanup(
            &*self.transport,
            &group_id,
            &retry_topic,
            dead_letter_topic.as_deref(),
            self.policy.max_retry_duration,
        )?;
        // Copies of origin partition p go to retry partition p % n (see
        // keyorder.rs); n is the retry topic's count as it is now.
        let key_order = match self.key_order {
            KeyOrder::Kept => {
                let n = self
                    .transport
                    .partition_count(&retry_topic)?
                    .unwrap_or(partitions);
                Some(Arc::new(KeyOrderState::new(&retry_topic, n)))
            }
            _ => None,
        };
        let producer = self.transport.engine_producer()?;
        let counters = Arc::new(Counters::default());
        let signal = Arc::new(StopSignal::default());
        let breaker = self
            .dead_letter_limit
            .clone()
            .map(|l| Arc::new(Breaker::new(l, group_id.clone(), counters.clone())));
        let health = Arc::new(HealthBoard::new(breaker.clone()));
        let writer = crate::engine::writes::BatchWriter::start(producer.clone(), health.clone())?;
        let queue_batches = self.queue_capacity.div_ceil(JOB_BATCH).max(1);
        let ctx = Arc::new(Context {
            group_id: group_id.clone(),
            topics: self.topics.clone(),
            retry_topic: retry_topic.clone().into(),
            dead_letters: DeadLetterTopics::new(
                dead_letter_topic,
                self.dead_letter_router.clone(),
                self.transport.clone(),
                partitions,
                self.replication_factor,
                self.topics.iter().chain([&retry_topic]).cloned().collect(),
            ),
            policy: self.policy.clone(),
            producer,
            writer,
            transport: self.transport.clone(),
            counters: counters.clone(),
            signal: signal.clone(),
            commit_interval: self.commit_interval,
            revoke_timeout: self.revoke_timeout,
            max_parked: self.max_parked,
            queue_batches,
            // As many as the worker queues hold, and one in hand per worker.
            spares: crate::engine::job::Spares::new(self.workers.saturating_mul(queue_batches + 1)),
            health: health.clone(),
            breaker: breaker.clone(),
            key_order,
            #[cfg(feature = "metrics")]
            metrics: crate::engine::metrics::Metrics::new(&group_id),
        });
        let relay_instance_id = match &self.group_instance_id {
            Some(id) => {
                // Room for the relay's "-relay" within Kafka's 249.
                if id.len() > 243 {
                    return Err(Error::config(
                        "group_instance_id",
                        "at most 243 characters (the relay adds \"-relay\")",
                    ));
                }
                crate::transport::validate_instance_id(id)?;
                Some(format!("{id}-relay"))
            }
            None => None,
        };
        let consumer_config =
            |group: String, topics: Vec<String>, instance: Option<String>, claims| ConsumerConfig {
                group_id: group,
                topics,
                offset_reset: self.offset_reset,
                session_timeout: self.session_timeout,
                rebalance_timeout: self.rebalance_timeout,
                max_poll_records: self.max_poll_records,
                // The transport's client id (`KafkaConfig::client_id`), so the
                // id a user set is the one the broker logs and quotas see.
                client_id: None,
                group_instance_id: instance,
                rebalance_protocol: self.rebalance_protocol,
                isolation_level: self.isolation_level,
                claims,
                // Woken by the stop, so a join the group holds up does not
                // keep the consumer thread past the shutdown's deadline.
                wakeup: Some(signal.wakeup.clone()),
            };
        // Create both group members before starting any thread, so a broker
        // error surfaces from build() and not from a thread later.
        let main = self.transport.consumer(consumer_config(
            group_id.clone(),
            self.topics.clone(),
            self.group_instance_id.clone(),
            None,
        ))?;
        let relay_consumer = self.transport.consumer(consumer_config(
            relay_group_id.clone(),
            vec![retry_topic.clone()],
            relay_instance_id,
            // Key order: the relay asks for the retry partitions of the
            // origin partitions its engine owns (dispatch.rs sets them).
            ctx.key_order.as_ref().map(|ko| ko.claims()),
        ))?;

        let mut threads = Threads::new(signal, health);
        let (completion_tx, completion_rx) = crossbeam_channel::unbounded();
        let mut job_txs = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let (tx, rx) = crossbeam_channel::bounded(ctx.queue_batches);
            job_txs.push(tx);
            let ctx = ctx.clone();
            let handler = handler.clone();
            let completion_tx = completion_tx.clone();
            threads.spawn(format!("kafka-retry-worker-{i}"), move |status| {
                worker::run_worker(ctx, handler, rx, completion_tx, status);
                Ok(())
            })?;
        }
        drop(completion_tx);
        // Private redelivery: the relay feeds the same worker queues (and
        // the workers end once it, too, has dropped its senders).
        let handoff = (self.redelivery == Redelivery::Private)
            .then(|| relay::private::Handoff::new(job_txs.clone(), relay_group_id.clone()));
        {
            let ctx = ctx.clone();
            threads.spawn("kafka-retry-consumer".into(), move |status| {
                dispatch::run(ctx, main, job_txs, completion_rx, status)
            })?;
        }
        {
            let ctx = ctx.clone();
            threads.spawn("kafka-retry-relay".into(), move |status| {
                relay::run(ctx, relay_consumer, status, handoff)
            })?;
        }
        log::info!(
            "engine started: group {group_id}, topics {:?}, retry topic {retry_topic} (relay group {relay_group_id}), {} workers",
            self.topics,
            self.workers
        );
        Ok(Engine::new(threads, counters, breaker))
    }
}

/// Checks what could remove a record from the retry topic before it is
/// due. Compaction is refused: it keeps only the latest record of a key,
/// so parking a second record of a key (or a key's next attempt) would
/// delete the first from the log. A retention shorter than
/// `max_retry_duration` is a warning: a record parked that long (a long
/// `retry_after`, a key-order held copy, a relay that was down) is gone
/// when it falls due, counted in `Stats::parked_gone`. Settings the broker
/// does not report (Tansu, the memory broker) or a refused DescribeConfigs
/// (no `DESCRIBE_CONFIGS` ACL) pass: the check is advice, never a reason to
/// stay down.
fn check_cleanup(
    transport: &dyn Transport,
    group: &str,
    retry_topic: &str,
    dead_letter_topic: Option<&str>,
    max_retry_duration: Duration,
) -> Result<()> {
    let settings = |topic: &str| match transport.retention(topic) {
        Ok(r) => r,
        Err(e) => {
            log::info!("{group}: could not read the cleanup settings of topic {topic}: {e}");
            None
        }
    };
    if let Some(r) = settings(retry_topic) {
        if r.compacted {
            return Err(Error::config(
                "retry_topic",
                format!(
                    "topic {retry_topic} has cleanup.policy=compact, which deletes every parked \
                     record but the latest of its key; set cleanup.policy=delete on it"
                ),
            ));
        }
        if let Some(t) = r.time.filter(|&t| t < max_retry_duration) {
            log::warn!(
                "{group}: retry topic {retry_topic} keeps records for {t:?} (retention.ms), \
                 less than max_retry_duration {max_retry_duration:?}: a record parked longer \
                 is gone when it falls due (Stats::parked_gone)"
            );
        }
        if let Some(b) = r.bytes {
            log::warn!(
                "{group}: retry topic {retry_topic} has retention.bytes {b}: a partition that \
                 grows past it loses its oldest parked records before they are due"
            );
        }
    }
    if let Some(dlt) = dead_letter_topic {
        if settings(dlt).is_some_and(|r| r.compacted) {
            log::warn!(
                "{group}: dead-letter topic {dlt} has cleanup.policy=compact: only the latest \
                 dead letter of each key is kept"
            );
        }
    }
    Ok(())
}

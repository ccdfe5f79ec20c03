//! A transport that can fail abruptly, for the no-loss tests that start
//! and abandon engines at random moments (tests/engine_memory.rs,
//! tests/engine_key_order.rs), and the seeded generator they share. Needs
//! `#[macro_use] mod forward;` before it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_retry::transport::{
    Consumer, ConsumerConfig, ConsumerEvent, Producer, Reader, Transport,
};
use kafka_retry::{Delivered, Error, OutRecord, TopicPartition};

/// Wraps a transport; once `broken`, every call fails (like a process that
/// stopped talking mid-flight), and half the sends are written but
/// reported failed (a lost acknowledgement).
#[derive(Clone)]
pub struct Faulty {
    pub inner: Arc<dyn Transport>,
    pub broken: Arc<AtomicBool>,
    pub sends: Arc<AtomicU64>,
}

impl Faulty {
    /// A working transport over `inner`, and the switch that breaks it.
    pub fn new(inner: impl Transport + 'static) -> (Faulty, Arc<AtomicBool>) {
        let broken = Arc::new(AtomicBool::new(false));
        let faulty = Faulty {
            inner: Arc::new(inner),
            broken: broken.clone(),
            sends: Arc::default(),
        };
        (faulty, broken)
    }

    fn check(&self) -> kafka_retry::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(down());
        }
        Ok(())
    }
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faulty")
    }
}

pub fn down() -> Error {
    Error::Timeout("injected fault".into())
}

impl Transport for Faulty {
    fn consumer(&self, config: ConsumerConfig) -> kafka_retry::Result<Box<dyn Consumer>> {
        self.check()?;
        Ok(Box::new(FaultyConsumer {
            inner: self.inner.consumer(config)?,
            broken: self.broken.clone(),
        }))
    }
    fn producer(&self) -> kafka_retry::Result<Arc<dyn Producer>> {
        Ok(Arc::new(FaultyProducer {
            inner: self.inner.producer()?,
            broken: self.broken.clone(),
            sends: self.sends.clone(),
        }))
    }
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        rf: Option<i16>,
    ) -> kafka_retry::Result<()> {
        self.inner.create_topic(topic, partitions, rf)
    }
    fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
        self.check()?;
        self.inner.partition_count(topic)
    }
    fn reader(&self) -> kafka_retry::Result<Box<dyn Reader>> {
        self.check()?;
        self.inner.reader()
    }
}

#[derive(Debug)]
struct FaultyConsumer {
    inner: Box<dyn Consumer>,
    broken: Arc<AtomicBool>,
}

impl Consumer for FaultyConsumer {
    fn poll(&mut self, timeout: Duration) -> kafka_retry::Result<ConsumerEvent> {
        if self.broken.load(Ordering::SeqCst) {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return Err(down());
        }
        self.inner.poll(timeout)
    }
    fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> kafka_retry::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.commit(offsets)
    }
    forward_consumer!(pause, resume, assignment, close);
}

#[derive(Debug)]
struct FaultyProducer {
    inner: Arc<dyn Producer>,
    broken: Arc<AtomicBool>,
    sends: Arc<AtomicU64>,
}

impl Producer for FaultyProducer {
    fn send(&self, record: OutRecord) -> kafka_retry::Result<Delivered> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            if n.is_multiple_of(2) {
                // Written, but the acknowledgement is lost.
                let _ = self.inner.send(record);
            }
            return Err(down());
        }
        self.inner.send(record)
    }
}

/// Xorshift: a seeded, reproducible sequence (`KAFKA_RETRY_SEED`).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

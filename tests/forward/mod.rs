//! Test wrappers around a transport change one or two calls (a poll that
//! fails, a commit that is refused) and pass the rest to `self.inner`. These
//! macros write the pass-through methods once.

/// Inside `impl Consumer for W`, where `W` has `inner: Box<dyn Consumer>`:
/// forwards the named methods (any of `poll`, `pause`, `resume`, `commit`,
/// `assignment`, `close`) to `self.inner`.
#[allow(unused_macros)]
macro_rules! forward_consumer {
    ($($m:ident),* $(,)?) => { $( forward_consumer!(@ $m); )* };
    (@ poll) => {
        fn poll(&mut self, timeout: std::time::Duration) -> kafka_retry::Result<kafka_retry::transport::ConsumerEvent> {
            self.inner.poll(timeout)
        }
    };
    (@ pause) => {
        fn pause(&mut self, partitions: &[kafka_retry::TopicPartition]) {
            self.inner.pause(partitions)
        }
    };
    (@ resume) => {
        fn resume(&mut self, partitions: &[kafka_retry::TopicPartition]) {
            self.inner.resume(partitions)
        }
    };
    (@ commit) => {
        fn commit(&mut self, offsets: &[(kafka_retry::TopicPartition, i64)]) -> kafka_retry::Result<()> {
            self.inner.commit(offsets)
        }
    };
    (@ assignment) => {
        fn assignment(&self) -> Vec<kafka_retry::TopicPartition> {
            self.inner.assignment()
        }
    };
    (@ close) => {
        fn close(&mut self) -> kafka_retry::Result<()> {
            self.inner.close()
        }
    };
}

/// Inside `impl Transport for W`, where `W` has an `inner` transport:
/// forwards the named methods (any of `consumer`, `producer`,
/// `engine_producer`, `create_topic`, `partition_count`, `reader`, `retention`) to
/// `self.inner`.
#[allow(unused_macros)]
macro_rules! forward_transport {
    ($($m:ident),* $(,)?) => { $( forward_transport!(@ $m); )* };
    (@ consumer) => {
        fn consumer(
            &self,
            config: kafka_retry::transport::ConsumerConfig,
        ) -> kafka_retry::Result<Box<dyn kafka_retry::transport::Consumer>> {
            kafka_retry::transport::Transport::consumer(&self.inner, config)
        }
    };
    (@ producer) => {
        fn producer(&self) -> kafka_retry::Result<std::sync::Arc<dyn kafka_retry::transport::Producer>> {
            kafka_retry::transport::Transport::producer(&self.inner)
        }
    };
    (@ engine_producer) => {
        fn engine_producer(
            &self,
        ) -> kafka_retry::Result<std::sync::Arc<dyn kafka_retry::transport::Producer>> {
            kafka_retry::transport::Transport::engine_producer(&self.inner)
        }
    };
    (@ create_topic) => {
        fn create_topic(&self, topic: &str, partitions: i32, rf: Option<i16>) -> kafka_retry::Result<()> {
            kafka_retry::transport::Transport::create_topic(&self.inner, topic, partitions, rf)
        }
    };
    (@ partition_count) => {
        fn partition_count(&self, topic: &str) -> kafka_retry::Result<Option<i32>> {
            kafka_retry::transport::Transport::partition_count(&self.inner, topic)
        }
    };
    (@ reader) => {
        fn reader(&self) -> kafka_retry::Result<Box<dyn kafka_retry::transport::Reader>> {
            kafka_retry::transport::Transport::reader(&self.inner)
        }
    };
    (@ retention) => {
        fn retention(&self, topic: &str) -> kafka_retry::Result<Option<kafka_retry::transport::Retention>> {
            kafka_retry::transport::Transport::retention(&self.inner, topic)
        }
    };
}

/// Inside `impl Reader for W`, where `W` has `inner: Box<dyn Reader>`:
/// forwards the named methods (any of `partitions`, `offsets`,
/// `committed`) to `self.inner`.
#[allow(unused_macros)]
macro_rules! forward_reader {
    ($($m:ident),* $(,)?) => { $( forward_reader!(@ $m); )* };
    (@ partitions) => {
        fn partitions(&mut self, topic: &str) -> kafka_retry::Result<Option<i32>> {
            self.inner.partitions(topic)
        }
    };
    (@ offsets) => {
        fn offsets(&mut self, topic: &str) -> kafka_retry::Result<Vec<kafka_retry::transport::PartitionOffsets>> {
            self.inner.offsets(topic)
        }
    };
    (@ committed) => {
        fn committed(
            &mut self,
            group: &str,
            topic: &str,
        ) -> kafka_retry::Result<std::collections::BTreeMap<i32, i64>> {
            self.inner.committed(group, topic)
        }
    };
}

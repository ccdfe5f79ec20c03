//! Test wrappers around a transport change one or two calls (a poll that
//! fails, a commit that is refused) and pass the rest to `self.inner`. These
//! macros write the pass-through methods once.

/// Inside `impl Consumer for W`, where `W` has `inner: Box<dyn Consumer>`:
/// forwards the named methods (any of `poll`, `pause`, `resume`, `commit`,
/// `assignment`, `close`) to `self.inner`.
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

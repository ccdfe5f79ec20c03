//! `Transport::reader`: partitions, offsets, records and committed offsets
//! read without a consumer group, on the memory broker and on Kafka (the
//! broker in `KAFKA_BOOTSTRAP`, Tansu under `scripts/test`). The same checks
//! run on both.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kafka_retry::transport::{ConsumerConfig, ConsumerEvent, PartitionOffsets, Transport};
use kafka_retry::{Error, MemoryBroker, OutRecord, TopicPartition};

fn offsets(p: i32, earliest: i64, latest: i64) -> PartitionOffsets {
    PartitionOffsets {
        partition: p,
        earliest,
        latest,
    }
}

/// Every Reader method on `t`, against a fresh topic.
fn reader_checks(t: Arc<dyn Transport>, session_timeout: Duration) {
    let topic = common::unique("reader");
    t.create_topic(&topic, 3, None).unwrap();
    let producer = t.producer().unwrap();
    for i in 0..5 {
        producer
            .send(
                OutRecord::new(&topic)
                    .partition(0)
                    .key(format!("k{i}"))
                    .value(format!("v{i}"))
                    .header("h", format!("{i}")),
            )
            .unwrap();
    }
    for i in 0..2 {
        producer
            .send(OutRecord::new(&topic).partition(1).value(format!("w{i}")))
            .unwrap();
    }

    let mut r = t.reader().unwrap();
    assert_eq!(r.partitions(&topic).unwrap(), Some(3));
    assert_eq!(r.partitions("no-such-topic-reader").unwrap(), None);
    assert_eq!(
        r.offsets(&topic).unwrap(),
        vec![offsets(0, 0, 5), offsets(1, 0, 2), offsets(2, 0, 0)]
    );
    assert!(matches!(
        r.offsets("no-such-topic-reader"),
        Err(Error::UnknownTopic(_))
    ));

    // Batches, continuing where the last one ended.
    let p0 = TopicPartition::new(&topic, 0);
    let first = r.read(&p0, 0, 2, Duration::from_secs(10)).unwrap();
    assert_eq!(first.iter().map(|x| x.offset).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(first[1].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(first[1].value.as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        first[1].header("h").unwrap().value.as_deref(),
        Some(&b"1"[..])
    );
    let mut rest = Vec::new();
    while rest.len() < 3 {
        let next = 2 + rest.len() as i64;
        rest.extend(r.read(&p0, next, 10, Duration::from_secs(10)).unwrap());
    }
    assert_eq!(rest.iter().map(|x| x.offset).collect::<Vec<_>>(), [2, 3, 4]);
    // Another partition, then back to an arbitrary offset of the first.
    let p1 = TopicPartition::new(&topic, 1);
    let w = r.read(&p1, 0, 10, Duration::from_secs(10)).unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].value.as_deref(), Some(&b"w0"[..]));
    let again = r.read(&p0, 3, 1, Duration::from_secs(10)).unwrap();
    assert_eq!(again[0].offset, 3);
    // At the end: nothing, after the timeout.
    assert!(r
        .read(&p0, 5, 10, Duration::from_millis(200))
        .unwrap()
        .is_empty());
    // A record written while a read waits is returned by that read.
    let writer = {
        let producer = Arc::clone(&producer);
        let topic = topic.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            producer
                .send(OutRecord::new(&topic).partition(2).value("late"))
                .unwrap();
        })
    };
    let p2 = TopicPartition::new(&topic, 2);
    let late = r.read(&p2, 0, 10, Duration::from_secs(10)).unwrap();
    writer.join().unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].value.as_deref(), Some(&b"late"[..]));

    // Bad coordinates are errors, not waits.
    assert!(r
        .read(
            &TopicPartition::new(&topic, 7),
            0,
            1,
            Duration::from_secs(1)
        )
        .is_err());
    assert!(r
        .read(
            &TopicPartition::new("no-such-topic-reader", 0),
            0,
            1,
            Duration::from_secs(1)
        )
        .is_err());

    // Committed offsets of a group, read without joining it.
    let group = common::unique("reader-group");
    assert!(r.committed(&group, &topic).unwrap().is_empty());
    let mut config = ConsumerConfig::new(&group, [topic.clone()]);
    config.session_timeout = session_timeout;
    let mut c = t.consumer(config).unwrap();
    let mut assigned = false;
    for _ in 0..100 {
        if let ConsumerEvent::Assigned(_) = c.poll(Duration::from_millis(200)).unwrap() {
            assigned = true;
            break;
        }
    }
    assert!(assigned, "the consumer never got its partitions");
    c.commit(&[(p0.clone(), 3), (p1.clone(), 2)]).unwrap();
    let committed = r.committed(&group, &topic).unwrap();
    assert_eq!(committed.into_iter().collect::<Vec<_>>(), [(0, 3), (1, 2)]);
    c.close().unwrap();
    assert!(r.committed(&group, "no-such-topic-reader").is_err());
}

#[test]
fn memory_reader() {
    reader_checks(Arc::new(MemoryBroker::new()), Duration::from_secs(10));
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_reader() {
    use kafka_retry::{KafkaConfig, KafkaTransport};
    let config = KafkaConfig::new(common::kafka_bootstrap())
        .request_timeout(Duration::from_secs(10))
        .fetch_max_wait(Duration::from_millis(50));
    let kafka = KafkaTransport::connect(config).expect("connect to the test broker");
    reader_checks(Arc::new(kafka), Duration::from_secs(2));
}

/// A transport written outside the crate, without a reader, still compiles
/// and says so.
#[test]
fn the_default_reader_says_it_is_not_supported() {
    #[derive(Debug)]
    struct Plain(MemoryBroker);
    impl Transport for Plain {
        fn consumer(
            &self,
            c: ConsumerConfig,
        ) -> kafka_retry::Result<Box<dyn kafka_retry::transport::Consumer>> {
            Transport::consumer(&self.0, c)
        }
        fn producer(&self) -> kafka_retry::Result<Arc<dyn kafka_retry::transport::Producer>> {
            Transport::producer(&self.0)
        }
        fn create_topic(&self, t: &str, p: i32, rf: Option<i16>) -> kafka_retry::Result<()> {
            Transport::create_topic(&self.0, t, p, rf)
        }
        fn partition_count(&self, t: &str) -> kafka_retry::Result<Option<i32>> {
            Transport::partition_count(&self.0, t)
        }
    }
    let err = Plain(MemoryBroker::new()).reader().unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
    // Forwarded through Arc and Box.
    let boxed: Box<dyn Transport> = Box::new(MemoryBroker::new());
    assert!(boxed.reader().is_ok());
}

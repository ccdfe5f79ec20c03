//! Record types shared by every transport and the engine.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

/// A topic name, shared: every record of a fetch carries its topic, and
/// cloning a `Topic` costs a reference count where a `String` cost an
/// allocation, a copy and a free on whichever thread drops the record
/// (about 45 ns a record through the consumer thread and a worker).
///
/// It reads as a `&str` (`Deref`, `AsRef<str>`, `Display`), compares with
/// `str` and `String`, and converts from and to `String`:
///
/// ```
/// use kafka_retry::Topic;
/// let t = Topic::from("orders");
/// assert_eq!(t, "orders");
/// assert!(t.starts_with("ord"));
/// assert_eq!(t.clone().as_str(), "orders");
/// let s: String = t.into();
/// assert_eq!(s, "orders");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Topic {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Sound for maps keyed by `Topic` and looked up by `&str`: `Eq`, `Ord` and
// `Hash` are those of the `str` inside.
impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Topic {
    fn from(name: &str) -> Self {
        Topic(Arc::from(name))
    }
}

impl From<String> for Topic {
    fn from(name: String) -> Self {
        Topic(Arc::from(name))
    }
}

impl From<&String> for Topic {
    fn from(name: &String) -> Self {
        Topic(Arc::from(name.as_str()))
    }
}

impl From<&Topic> for Topic {
    fn from(topic: &Topic) -> Self {
        topic.clone()
    }
}

impl From<Arc<str>> for Topic {
    fn from(name: Arc<str>) -> Self {
        Topic(name)
    }
}

impl From<Topic> for String {
    fn from(topic: Topic) -> Self {
        topic.0.to_string()
    }
}

impl From<&Topic> for String {
    fn from(topic: &Topic) -> Self {
        topic.0.to_string()
    }
}

impl PartialEq<str> for Topic {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Topic {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Topic {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Topic> for str {
    fn eq(&self, other: &Topic) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Topic> for &str {
    fn eq(&self, other: &Topic) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Topic> for String {
    fn eq(&self, other: &Topic) -> bool {
        **self == *other.0
    }
}

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition pair.
    ///
    /// ```
    /// let tp = kafka_retry::TopicPartition::new("orders", 3);
    /// assert_eq!(tp.to_string(), "orders-3");
    /// ```
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One record header. Kafka allows several headers with the same key and a
/// null value; both survive every hop. The key is kept as raw bytes so a
/// non-UTF-8 key written by another client passes through unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key (UTF-8 in every well-behaved client, but not checked).
    pub key: Bytes,
    /// Header value; `None` is a null value, distinct from empty.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header from a key and a value.
    ///
    /// ```
    /// let h = kafka_retry::Header::new("trace-id", "abc");
    /// assert_eq!(h.key_str(), Some("trace-id"));
    /// ```
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// The key as UTF-8, if it is.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }
}

/// A record read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic the record was read from.
    pub topic: Topic,
    /// Partition the record was read from.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Record timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Key; `None` is a null key, distinct from an empty one.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone), distinct from an empty one.
    pub value: Option<Bytes>,
    /// Headers in wire order, duplicates kept.
    pub headers: Vec<Header>,
}

impl Record {
    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// The last header named `key`, if any (its value is
    /// [`Header::value`], `None` for a null value).
    ///
    /// ```
    /// use kafka_retry::{Header, Record};
    /// let r = Record {
    ///     topic: "orders".into(), partition: 0, offset: 0, timestamp: 0,
    ///     key: None, value: None,
    ///     headers: vec![Header::new("trace", "a"), Header::new("trace", "b")],
    /// };
    /// let h = r.header("trace").unwrap();
    /// assert_eq!(h.value.as_deref(), Some(&b"b"[..]));
    /// assert!(r.header("missing").is_none());
    /// ```
    pub fn header(&self, key: &str) -> Option<&Header> {
        self.headers
            .iter()
            .rev()
            .find(|h| &h.key[..] == key.as_bytes())
    }
}

/// Where a produced record goes inside its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// Java's default partitioner: murmur2 of the key for keyed records,
    /// spread across partitions for records without a key.
    #[default]
    Default,
    /// This exact partition.
    Explicit(i32),
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: Topic,
    /// Partition choice.
    pub partitioning: Partitioning,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value.
    pub value: Option<Bytes>,
    /// Headers in order, duplicates kept.
    pub headers: Vec<Header>,
    /// Timestamp in ms since the Unix epoch; `None` means "now".
    pub timestamp: Option<i64>,
}

impl OutRecord {
    /// A record for `topic` with the default partitioner and no headers.
    ///
    /// ```
    /// let r = kafka_retry::OutRecord::new("orders")
    ///     .key("order-1")
    ///     .value("created")
    ///     .header("source", "web");
    /// assert_eq!(r.headers.len(), 1);
    /// ```
    pub fn new(topic: impl Into<Topic>) -> Self {
        OutRecord {
            topic: topic.into(),
            partitioning: Partitioning::Default,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sends to this exact partition instead of the default partitioner.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partitioning = Partitioning::Explicit(partition);
        self
    }

    /// The engine's one copy of a read record onto another topic (retry,
    /// dead-letter, origin): key and value unchanged, `headers` as given.
    pub(crate) fn forward(
        record: &Record,
        topic: Topic,
        partitioning: Partitioning,
        headers: Vec<Header>,
    ) -> Self {
        OutRecord {
            topic,
            partitioning,
            key: record.key.clone(),
            value: record.value.clone(),
            headers,
            timestamp: None,
        }
    }
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Topic written to.
    pub topic: Topic,
    /// Partition written to.
    pub partition: i32,
    /// Offset the broker gave the record.
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::Topic;

    /// A `Topic` behaves as the `String` it replaced: equal, ordered,
    /// hashed, printed and debug-printed as its name; a map keyed by it is
    /// looked up by `&str`; clones share one allocation.
    #[test]
    fn topic_reads_compares_and_hashes_as_its_name() {
        let t = Topic::from("orders");
        let s = String::from("orders");
        assert_eq!(t, "orders");
        assert_eq!(t, s);
        assert_eq!(s, t);
        assert_eq!("orders", t);
        assert_eq!(*"orders", t);
        assert_ne!(t, "orders2");
        assert_eq!(Topic::from(s.clone()), t);
        assert_eq!(Topic::from(&s), t);
        assert_eq!(format!("{t}"), "orders");
        assert_eq!(format!("{t:?}"), format!("{s:?}"));
        assert_eq!(String::from(&t), s);
        assert_eq!(t.len(), 6);
        let mut map = HashMap::new();
        map.insert(t.clone(), 1);
        assert_eq!(map.get("orders"), Some(&1));
        assert_eq!(map.get("other"), None);
        let set: BTreeSet<Topic> = ["b", "a", "c"].into_iter().map(Topic::from).collect();
        let names: Vec<&str> = set.iter().map(Topic::as_str).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let again = t.clone();
        assert!(
            std::ptr::eq(again.as_str(), t.as_str()),
            "a clone copied the name"
        );
        assert_eq!(Topic::default(), "");
    }
}

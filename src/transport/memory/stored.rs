//! A record as the memory broker keeps it: key, value and headers copied
//! into a buffer shared by every record of one produce call's run of one
//! partition.
//!
//! Why: every fetch hands each record's key, value and header [`Bytes`]
//! to another thread (a worker), which drops them there. With the
//! producer's own `Bytes` kept as they came, a read cost one refcount
//! increment per field, each on its own allocation's cache line, mostly a
//! miss (the line was last touched when the record was produced): the
//! largest item of the engine's profile on this broker. Copied once at
//! produce time into one buffer per run, a read clones refcounts only
//! (no bytes copied), and a fetch of consecutive records increments one
//! refcount, on one line that stays in the reading core's cache for the
//! whole fetch. It also keeps a record in no allocation of its own.
//!
//! The cost: a buffer lives until its last record is dropped, which on
//! this broker (no retention) is the broker's own end anyway.

use bytes::Bytes;

use crate::record::{Header, Record, Topic};

/// A record to store, as the producer gave it.
pub(super) struct Fields {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Where a record's fields lie in the shared buffer.
struct Layout {
    timestamp: i64,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: Vec<(std::ops::Range<usize>, Option<std::ops::Range<usize>>)>,
}

/// A stored record: its offset is its index in the log, its topic and
/// partition are those of the log. The fields are slices of a shared
/// buffer.
pub(super) struct Stored {
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
}

impl Stored {
    /// One record in a buffer of its own.
    pub(super) fn new(
        timestamp: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<Header>,
    ) -> Stored {
        let mut one = Stored::all(vec![Fields {
            timestamp,
            key,
            value,
            headers,
        }]);
        one.pop().unwrap_or(Stored {
            // Unreachable: one in, one out.
            timestamp,
            key: None,
            value: None,
            headers: Vec::new(),
        })
    }

    /// Copies every record's key, value and headers into one buffer, in
    /// order. Null (`None`) and empty stay distinct; header order and
    /// duplicates are kept.
    pub(super) fn all(records: Vec<Fields>) -> Vec<Stored> {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        let total: usize = records
            .iter()
            .map(|f| {
                len(&f.key)
                    + len(&f.value)
                    + f.headers
                        .iter()
                        .map(|h| h.key.len() + len(&h.value))
                        .sum::<usize>()
            })
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut put = |b: &[u8]| {
            let start = buf.len();
            buf.extend_from_slice(b);
            start..buf.len()
        };
        let layouts: Vec<Layout> = records
            .iter()
            .map(|f| Layout {
                timestamp: f.timestamp,
                key: f.key.as_deref().map(&mut put),
                value: f.value.as_deref().map(&mut put),
                headers: f
                    .headers
                    .iter()
                    .map(|h| (put(&h.key), h.value.as_deref().map(&mut put)))
                    .collect(),
            })
            .collect();
        // The producer's buffers are released here, not kept alive by us.
        drop(records);
        // An empty slice is `Bytes::new()` (static, no refcount), so null
        // and empty fields cost nothing, and an all-empty run allocates
        // nothing.
        let buf = Bytes::from(buf);
        layouts
            .into_iter()
            .map(|l| Stored {
                timestamp: l.timestamp,
                key: l.key.map(|r| buf.slice(r)),
                value: l.value.map(|r| buf.slice(r)),
                headers: l
                    .headers
                    .into_iter()
                    .map(|(k, v)| Header {
                        key: buf.slice(k),
                        value: v.map(|r| buf.slice(r)),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The record at `offset` of `topic`/`partition`: refcounts cloned,
    /// no bytes copied.
    pub(super) fn to_record(&self, topic: &Topic, partition: i32, offset: i64) -> Record {
        Record {
            topic: topic.clone(),
            partition,
            offset,
            timestamp: self.timestamp,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn every_field_survives_with_null_and_empty_kept_apart() {
        let headers = vec![
            Header::new(b("h"), b("1")),
            Header {
                key: b("null"),
                value: None,
            },
            Header::new(b(""), b("")),
            Header::new(b("h"), b("2")),
        ];
        let s = Stored::new(7, Some(b("")), Some(b("value")), headers.clone());
        let r = s.to_record(&"t".into(), 3, 9);
        assert_eq!((r.topic.as_str(), r.partition, r.offset), ("t", 3, 9));
        assert_eq!(r.timestamp, 7);
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
        assert_eq!(r.value.as_deref(), Some(&b"value"[..]));
        assert_eq!(r.headers, headers);

        let s = Stored::new(0, None, None, Vec::new());
        let r = s.to_record(&"t".into(), 0, 0);
        assert_eq!((r.key, r.value, r.headers.len()), (None, None, 0));

        // All empty: no buffer, still Some(empty) and a null header value.
        let s = Stored::new(
            0,
            Some(Bytes::new()),
            None,
            vec![Header {
                key: Bytes::new(),
                value: None,
            }],
        );
        let r = s.to_record(&"t".into(), 0, 0);
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
        assert_eq!(r.value, None);
        assert_eq!(r.headers[0].value, None);
    }

    #[test]
    fn fields_are_slices_of_one_buffer() {
        let s = Stored::new(
            0,
            Some(b("key")),
            Some(b("value")),
            vec![Header::new(b("hk"), b("hv"))],
        );
        let r = s.to_record(&"t".into(), 0, 0);
        let key = r.key.as_deref().unwrap().as_ptr() as usize;
        let value = r.value.as_deref().unwrap().as_ptr() as usize;
        let hk = r.headers[0].key.as_ptr() as usize;
        let hv = r.headers[0].value.as_deref().unwrap().as_ptr() as usize;
        // Laid out back to back in one allocation: no copy per read either
        // (a second read points at the same bytes).
        assert_eq!((value - key, hk - key, hv - key), (3, 8, 10));
        let again = s.to_record(&"t".into(), 0, 0);
        assert_eq!(again.key.as_deref().unwrap().as_ptr() as usize, key);
    }

    #[test]
    fn a_run_shares_one_buffer_and_keeps_order() {
        let f = |k: &str, v: Option<&str>| Fields {
            timestamp: 1,
            key: Some(b(k)),
            value: v.map(b),
            headers: Vec::new(),
        };
        let all = Stored::all(vec![f("a", Some("1")), f("bb", None), f("", Some("333"))]);
        let rs: Vec<Record> = all.iter().map(|s| s.to_record(&"t".into(), 0, 0)).collect();
        let got: Vec<(&str, Option<&str>)> = rs
            .iter()
            .map(|r| {
                fn text(b: &Bytes) -> &str {
                    std::str::from_utf8(b).unwrap()
                }
                (text(r.key.as_ref().unwrap()), r.value.as_ref().map(text))
            })
            .collect();
        assert_eq!(got, [("a", Some("1")), ("bb", None), ("", Some("333"))]);
        // Back to back: record 1's key follows record 0's value.
        let a = rs[0].key.as_deref().unwrap().as_ptr() as usize;
        let bb = rs[1].key.as_deref().unwrap().as_ptr() as usize;
        assert_eq!(bb - a, 2);
        assert!(Stored::all(Vec::new()).is_empty());
    }
}

/// Records per segment of a [`Log`]: 4,096 of about 100 bytes, so a
/// segment is a few hundred KiB.
const SEGMENT: usize = 4096;

/// A partition's records in fixed-size segments, so an append never moves
/// the records before it. A plain `Vec` doubled as it grew, copying the
/// whole log and faulting in fresh pages for it under the partition's
/// lock: with 100,000s of records in a partition every producer and
/// reader of it stalled for tens of milliseconds at each doubling (the
/// tail of the relay lateness benchmark with 1 M parked).
#[derive(Default)]
pub(super) struct Log {
    segments: Vec<Vec<Stored>>,
    len: usize,
}

impl Log {
    /// Records in the log; the next record's offset.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, record: Stored) {
        match self.segments.last_mut() {
            Some(s) if s.len() < SEGMENT => s.push(record),
            // The first segment grows as a `Vec` does (a small topic keeps
            // a small log); later ones are allocated whole.
            None => self.segments.push(vec![record]),
            Some(_) => {
                let mut s = Vec::with_capacity(SEGMENT);
                s.push(record);
                self.segments.push(s);
            }
        }
        self.len += 1;
    }

    /// The records at offsets `from..to` (clamped to the log), in order.
    pub(super) fn range(&self, from: usize, to: usize) -> impl Iterator<Item = &Stored> {
        let to = to.min(self.len);
        let from = from.min(to);
        self.segments
            .iter()
            .skip(from / SEGMENT)
            .flatten()
            .skip(from % SEGMENT)
            .take(to - from)
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    fn log(n: usize) -> Log {
        let mut log = Log::default();
        for i in 0..n {
            log.push(Stored::new(i as i64, None, None, Vec::new()));
        }
        log
    }

    /// Ranges across segment boundaries give each offset once, in order.
    #[test]
    fn ranges_cross_segments_in_order() {
        let n = 2 * SEGMENT + 17;
        let l = log(n);
        assert_eq!(l.len(), n);
        for (from, to) in [
            (0, n),
            (SEGMENT - 3, SEGMENT + 5),
            (SEGMENT, 2 * SEGMENT),
            (n - 2, n + 10),
            (n, n),
            (5, 3),
        ] {
            let got: Vec<i64> = l
                .range(from, to)
                .map(|s| s.to_record(&"t".into(), 0, 0).timestamp)
                .collect();
            let want: Vec<i64> = (from.min(n)..to.min(n)).map(|i| i as i64).collect();
            assert_eq!(got, want, "{from}..{to}");
        }
    }
}

//! A record as the memory broker keeps it: key, value and headers in one
//! shared buffer.
//!
//! Why one buffer: every fetch hands each record's key, value and header
//! [`Bytes`] to another thread (a worker), which drops them there. With
//! the producer's own `Bytes` kept as they came, a record read cost one
//! refcount increment and one decrement per field, each on its own
//! allocation's cache line, bounced between the consumer thread and the
//! workers: the largest item of the engine's profile on this broker. Copied
//! once at produce time into one allocation, the fields of a record are
//! slices of one `Bytes`: a read still bumps a refcount per field, but all
//! on one cache line, and copies no bytes. It also keeps a record in two
//! allocations (the buffer and its refcount) instead of one per field.

use bytes::Bytes;

use crate::record::{Header, Record};

/// A stored record: its offset is its index in the log, its topic and
/// partition are those of the log. The fields are slices of one buffer.
pub(super) struct Stored {
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
}

impl Stored {
    /// Copies `key`, `value` and `headers` into one buffer. Null (`None`)
    /// and empty stay distinct; header order and duplicates are kept.
    pub(super) fn new(
        timestamp: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<Header>,
    ) -> Stored {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        let total = len(&key)
            + len(&value)
            + headers
                .iter()
                .map(|h| h.key.len() + len(&h.value))
                .sum::<usize>();
        if total == 0 {
            // Nothing to share (null or empty fields): `Bytes::new()` is a
            // static, no allocation, no refcount.
            return Stored {
                timestamp,
                key: key.map(|_| Bytes::new()),
                value: value.map(|_| Bytes::new()),
                headers: headers
                    .into_iter()
                    .map(|h| Header {
                        key: Bytes::new(),
                        value: h.value.map(|_| Bytes::new()),
                    })
                    .collect(),
            };
        }
        let mut buf = Vec::with_capacity(total);
        let mut put = |b: &[u8]| {
            let start = buf.len();
            buf.extend_from_slice(b);
            start..buf.len()
        };
        let key_at = key.as_deref().map(&mut put);
        let value_at = value.as_deref().map(&mut put);
        let header_at: Vec<_> = headers
            .iter()
            .map(|h| (put(&h.key), h.value.as_deref().map(&mut put)))
            .collect();
        // The producer's buffers are released here, not kept alive by us.
        drop((key, value, headers));
        let buf = Bytes::from(buf);
        Stored {
            timestamp,
            key: key_at.map(|r| buf.slice(r)),
            value: value_at.map(|r| buf.slice(r)),
            headers: header_at
                .into_iter()
                .map(|(k, v)| Header {
                    key: buf.slice(k),
                    value: v.map(|r| buf.slice(r)),
                })
                .collect(),
        }
    }

    /// The record at `offset` of `topic`/`partition`: refcounts cloned,
    /// no bytes copied.
    pub(super) fn to_record(&self, topic: &str, partition: i32, offset: i64) -> Record {
        Record {
            topic: topic.to_string(),
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
        let r = s.to_record("t", 3, 9);
        assert_eq!((r.topic.as_str(), r.partition, r.offset), ("t", 3, 9));
        assert_eq!(r.timestamp, 7);
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
        assert_eq!(r.value.as_deref(), Some(&b"value"[..]));
        assert_eq!(r.headers, headers);

        let s = Stored::new(0, None, None, Vec::new());
        let r = s.to_record("t", 0, 0);
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
        let r = s.to_record("t", 0, 0);
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
        let r = s.to_record("t", 0, 0);
        let key = r.key.as_deref().unwrap().as_ptr() as usize;
        let value = r.value.as_deref().unwrap().as_ptr() as usize;
        let hk = r.headers[0].key.as_ptr() as usize;
        let hv = r.headers[0].value.as_deref().unwrap().as_ptr() as usize;
        // Laid out back to back in one allocation: no copy per read either
        // (a second read points at the same bytes).
        assert_eq!((value - key, hk - key, hv - key), (3, 8, 10));
        let again = s.to_record("t", 0, 0);
        assert_eq!(again.key.as_deref().unwrap().as_ptr() as usize, key);
    }
}

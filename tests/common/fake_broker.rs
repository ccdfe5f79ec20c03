//! Wire helpers for the fake Kafka brokers of the tests (`tests/fuzz_decode.rs`):
//! a writer for reply bodies and a reader for the client's requests, both in
//! Kafka's classic (non-flexible) encodings, plus the `[topic [partition]]`
//! arrays most requests and replies carry.
#![allow(dead_code)]

/// Big-endian writer for Kafka's classic (non-flexible) encodings.
#[derive(Default)]
pub struct W(pub Vec<u8>);

impl W {
    pub fn i8(&mut self, v: i8) -> &mut W {
        self.0.push(v as u8);
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut W {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn nstr(&mut self, s: Option<&str>) -> &mut W {
        match s {
            Some(s) => self.str(s),
            None => self.i16(-1),
        }
    }
    pub fn bytes(&mut self, b: Option<&[u8]>) -> &mut W {
        match b {
            Some(b) => {
                self.i32(b.len() as i32);
                self.0.extend_from_slice(b);
                self
            }
            None => self.i32(-1),
        }
    }
    pub fn uvarint(&mut self, mut v: u64) -> &mut W {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    pub fn varint(&mut self, v: i64) -> &mut W {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64)
    }
    pub fn vbytes(&mut self, b: Option<&[u8]>) -> &mut W {
        match b {
            Some(b) => {
                self.varint(b.len() as i64);
                self.0.extend_from_slice(b);
                self
            }
            None => self.varint(-1),
        }
    }
}

/// Reader for the requests the client sends (trusted, but never panics).
pub struct R<'a>(pub &'a [u8]);

impl<'a> R<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    pub fn i16(&mut self) -> Option<i16> {
        let b = self.take(2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i64(&mut self) -> Option<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_be_bytes(a))
    }
    pub fn nstr(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(
            String::from_utf8_lossy(self.take(n as usize)?).into_owned(),
        ))
    }
    pub fn str(&mut self) -> Option<String> {
        self.nstr()?
    }
    pub fn nbytes(&mut self) -> Option<Option<&'a [u8]>> {
        let n = self.i32()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(self.take(n as usize)?))
    }
    pub fn count(&mut self) -> Option<usize> {
        let n = self.i32()?;
        Some(n.max(0) as usize)
    }
}

impl<'a> R<'a> {
    /// Reads a request's topics array: each a name and an array of
    /// partitions, whose fields `part` reads; the first `None` (a
    /// truncated request) ends that topic's partitions.
    pub fn topics<T>(
        &mut self,
        mut part: impl FnMut(&mut R<'a>) -> Option<T>,
    ) -> Vec<(String, Vec<T>)> {
        let mut topics = Vec::new();
        for _ in 0..self.count().unwrap_or(0) {
            let Some(name) = self.str() else { break };
            let mut parts = Vec::new();
            for _ in 0..self.count().unwrap_or(0) {
                let Some(p) = part(self) else { break };
                parts.push(p);
            }
            topics.push((name, parts));
        }
        topics
    }
}

impl W {
    /// Writes a reply's topics array: each a name and its partitions,
    /// written by `part`.
    pub fn topics<T>(
        &mut self,
        topics: &[(String, Vec<T>)],
        mut part: impl FnMut(&mut W, &T),
    ) -> &mut W {
        self.i32(topics.len() as i32);
        for (name, parts) in topics {
            self.str(name).i32(parts.len() as i32);
            for p in parts {
                part(self, p);
            }
        }
        self
    }
}

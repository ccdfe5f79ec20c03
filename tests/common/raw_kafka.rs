//! Raw Kafka requests on a plain TCP connection, encoded with kafka-protocol:
//! for tests that call an API the crate does not (CreatePartitions) or check
//! the crate's writes against the wire format rather than its own decoder.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// A connection to `bootstrap` whose reads time out after 10 s.
pub fn connect(bootstrap: &str) -> TcpStream {
    let stream = TcpStream::connect(bootstrap).expect("connect to the broker");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `req` as API `key` at `version` on `stream` and decodes the reply,
/// checking that it answers `correlation_id`.
pub fn call<Req, Resp>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    req: &Req,
) -> Resp
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str(client_id));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, Req::header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    stream.write_all(&(buf.len() as i32).to_be_bytes()).unwrap();
    stream.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut frame).unwrap();
    let mut frame = Bytes::from(frame);
    let rh = ResponseHeader::decode(&mut frame, Resp::header_version(version)).unwrap();
    assert_eq!(rh.correlation_id, correlation_id);
    Resp::decode(&mut frame, version).unwrap()
}

#!/usr/bin/env python3
"""Produces records whose header KEYS are arbitrary bytes, with kafka-python.

tests/py/peer.py takes header keys as str, and no python client accepts a
non-UTF-8 header key: kafka-python encodes each key with
`key.encode("utf-8")` (kafka/record/default_records.py) after checking
`isinstance(key, str)`. A str subclass whose encode() returns the raw bytes
gets them onto the wire unchanged, which is what a buggy or non-Java client
could send. Used by tests/bad_input_kafka.rs.

    bad_input.py produce --bootstrap HOST:PORT --topic T < records.jsonl

One JSON object per line, every byte string base64, header keys included:

    {"key": b64|null, "value": b64|null, "headers": [[key_b64, value_b64], ...],
     "partition": int|null}

Prints {"partition": p, "offset": o} per record, in input order. Exit status
0 ok, 1 error (message on stderr).

    bad_input.py produce-corrupt --bootstrap HOST:PORT --topic T < records.jsonl

Writes each record as its own record batch whose CRC is wrong (the last
byte of the batch flipped), with a hand-made Produce v3 request to the
bootstrap broker (a single-node cluster: it leads every partition), to
partition "partition" (default 0). Apache Kafka refuses such a batch
(CORRUPT_MESSAGE); Tansu stores it as sent, so consumers must cope with it.
"""

import argparse
import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fail, unb64  # noqa: E402
from common import read_records as common_read_records  # noqa: E402


class RawKey(str):
    """A str that kafka-python writes as the given raw bytes."""

    def __new__(cls, raw):
        obj = super().__new__(cls, raw.decode("latin-1"))
        obj.raw = raw
        return obj

    def encode(self, *_args, **_kwargs):  # noqa: D401 - mimics str.encode
        return self.raw


def read_records():
    return common_read_records(header_key=lambda k: RawKey(unb64(k)))


def produce_corrupt(args, records):
    from kafka.record.default_records import DefaultRecordBatchBuilder

    host, port = args.bootstrap.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=args.timeout)

    def string(b):
        return struct.pack(">h", len(b)) + b

    for corr, r in enumerate(records, 1):
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=0,
            is_transactional=False,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 24,
        )
        builder.append(0, timestamp=None, key=r["key"], value=r["value"], headers=r["headers"])
        batch = bytearray(builder.build())
        batch[-1] ^= 0xFF  # the CRC covers it: now it is wrong
        body = (
            struct.pack(">hhi", -1, -1, int(args.timeout * 1000))  # transactional id, acks, timeout
            + struct.pack(">i", 1)
            + string(args.topic.encode())
            + struct.pack(">ii", 1, r["partition"] or 0)
            + struct.pack(">i", len(batch))
            + bytes(batch)
        )
        request = struct.pack(">hhi", 0, 3, corr) + string(b"bad_input.py") + body
        conn.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", recv_exact(conn, 4))[0]
        reply = recv_exact(conn, size)
        # correlation id, [topic name, [partition, error, base offset, append time]], throttle
        at = 4 + 4
        at += 2 + struct.unpack(">h", reply[at : at + 2])[0]
        at += 4
        partition, error, offset = struct.unpack(">ihq", reply[at : at + 14])
        if error != 0:
            fail("record %d: Produce error %d" % (corr - 1, error))
        sys.stdout.write(json.dumps({"partition": partition, "offset": offset}) + "\n")
    sys.stdout.flush()
    conn.close()


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            fail("connection closed by the broker")
        data += chunk
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("produce", "produce-corrupt"):
        p = sub.add_parser(name)
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--topic", required=True)
        p.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    records = read_records()
    if args.cmd == "produce-corrupt":
        try:
            produce_corrupt(args, records)
        except (OSError, struct.error) as e:
            fail("produce-corrupt: %s: %s" % (type(e).__name__, e))
        return

    import kafka

    producer = kafka.KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(
                args.topic,
                key=r["key"],
                value=r["value"],
                headers=r["headers"] or None,
                partition=r["partition"],
            )
            for r in records
        ]
        producer.flush(timeout=args.timeout)
        for i, f in enumerate(futures):
            try:
                md = f.get(timeout=args.timeout)
            except Exception as e:  # noqa: BLE001 - report any client error
                fail("record %d: delivery failed: %r" % (i, e))
            sys.stdout.write(json.dumps({"partition": md.partition, "offset": md.offset}) + "\n")
        sys.stdout.flush()
    except Exception as e:  # noqa: BLE001 - one line on stderr, not a traceback
        fail("produce: %s: %s" % (type(e).__name__, e))
    finally:
        producer.close(timeout=5)


if __name__ == "__main__":
    main()

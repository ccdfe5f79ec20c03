#!/usr/bin/env python3
"""A peer Kafka client for kafka-retry's interop tests.

Drives a real, independent client (confluent-kafka / librdkafka by default,
kafka-python with --client kafka-python) so that tests can check that what our
crate writes is readable by others and the other way round.

Records travel as JSON lines, bytes as base64:

    {"key": b64|null, "value": b64|null, "headers": [[key_str, b64|null], ...],
     "partition": int|null, "timestamp": ms|null}

Subcommands (all take --bootstrap HOST:PORT, --client confluent|kafka-python and
any number of --config K=V client settings, e.g. --config message.max.bytes=2000000):

    create-topic --topic T [--partitions N] [--exist-ok]
    produce      --topic T [--compression gzip|snappy|lz4|zstd] [--interval-ms N] < records.jsonl
                 prints {"partition": p, "offset": o} per record, in input order
    consume      --topic T --count N [--timeout S] [--group G [--commit]]
                 prints each record (fields above plus "offset"), exits 2 if
                 fewer than N records arrived before the timeout
    committed    --topic T --group G
                 prints {"partition": p, "offset": o} per partition (-1: none)

Security settings are client settings too: --config security.protocol=SASL_SSL
--config sasl.mechanism=SCRAM-SHA-512 --config ssl.ca.location=ca.pem ... (see
tests/common/secure.rs); --oauth-token T makes the confluent peer send token T
for OAUTHBEARER.

Exit status: 0 ok, 1 client error, 2 timeout, 3 authentication failed
(confluent: librdkafka reported an authentication error). Diagnostics go to
stderr.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import b64, emit, fail, read_records, unb64  # noqa: E402


class AuthenticationFailed(Exception):
    """librdkafka reported an authentication error (exit status 3)."""


def record_json(topic_partition, offset, key, value, headers, timestamp):
    return {
        "partition": topic_partition,
        "offset": offset,
        "key": b64(key),
        "value": b64(value),
        "headers": [[k, b64(v)] for k, v in (headers or [])],
        "timestamp": timestamp,
    }


# --------------------------------------------------------------------------
# confluent-kafka (librdkafka)


class Confluent:
    def __init__(self, args):
        import confluent_kafka

        self.ck = confluent_kafka
        self.args = args
        self.auth_error = None
        self.base = {"bootstrap.servers": args.bootstrap, "error_cb": self._on_error}
        if args.debug:
            self.base["debug"] = args.debug
        if args.oauth_token:
            # A fixed OAUTHBEARER token (e.g. an expired one) instead of
            # librdkafka's own unsecured-token builder (sasl.oauthbearer.config).
            token = args.oauth_token
            self.base["oauth_cb"] = lambda _config: (token, time.time() + 3600)
        # --config K=V: any librdkafka property (message.max.bytes, ...).
        # Applied last, so it overrides the defaults set per command.
        self.extra = dict(args.config)

    def _on_error(self, err):
        # librdkafka reports connection and authentication problems here (they
        # are retried); an authentication failure ends the run at once.
        sys.stderr.write("peer.py: client error: %s\n" % err)
        if err.code() == self.ck.KafkaError._AUTHENTICATION and self.auth_error is None:
            self.auth_error = str(err)

    def _check_auth(self):
        if self.auth_error is not None:
            raise AuthenticationFailed(self.auth_error)

    def create_topic(self, topic, partitions, exist_ok):
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(dict(self.base, **self.extra))
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
            operation_timeout=10,
            request_timeout=15,
        )
        try:
            futures[topic].result(timeout=20)
        except self.ck.KafkaException as e:
            err = e.args[0]
            if exist_ok and err.code() == self.ck.KafkaError.TOPIC_ALREADY_EXISTS:
                return
            fail("create topic %s: %s" % (topic, err))

    def produce(self, topic, records, compression, linger_ms, timeout, interval_ms=0):
        conf = dict(self.base)
        conf.update({"acks": "all", "linger.ms": linger_ms, "message.timeout.ms": int(timeout * 1000)})
        if compression:
            conf["compression.type"] = compression
        conf.update(self.extra)
        producer = self.ck.Producer(conf)
        results = [None] * len(records)

        def on_delivery(i):
            def cb(err, msg):
                results[i] = (err, msg.partition(), msg.offset())

            return cb

        for i, r in enumerate(records):
            kwargs = {"key": r["key"], "value": r["value"], "on_delivery": on_delivery(i)}
            if r["headers"]:
                kwargs["headers"] = r["headers"]
            if r["partition"] is not None:
                kwargs["partition"] = r["partition"]
            if r["timestamp"] is not None:
                kwargs["timestamp"] = r["timestamp"]
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
                    self._check_auth()
            if interval_ms and i + 1 < len(records):
                # One record at a time, spread out: a long-lived connection.
                self._flush(producer, timeout)
                time.sleep(interval_ms / 1000.0)
        self._flush(producer, timeout)
        for i, res in enumerate(results):
            if res is None:
                fail("record %d: no delivery report" % i)
            err, partition, offset = res
            if err is not None:
                fail("record %d: delivery failed: %s" % (i, err))
            emit({"partition": partition, "offset": offset})

    def _flush(self, producer, timeout):
        deadline = time.monotonic() + timeout
        left = len(producer)
        while left:
            self._check_auth()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            left = producer.flush(min(remaining, 0.1))
        self._check_auth()
        if left:
            fail("%d record(s) not delivered within %ss" % (left, timeout), 2)

    def _consumer(self, group, session_timeout_ms):
        conf = dict(self.base)
        conf.update(
            {
                # librdkafka wants a group.id even when partitions are assigned
                # by hand; with assign() no JoinGroup is sent.
                "group.id": group or "kafka-retry-peer-assign",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_timeout_ms,
                "enable.partition.eof": False,
            }
        )
        conf.update(self.extra)
        return self.ck.Consumer(conf)

    def _partitions(self, consumer, topic, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                md = consumer.list_topics(topic, timeout=max(0.05, min(0.5, deadline - time.monotonic())))
                break
            except self.ck.KafkaException:
                self._check_auth()
                if time.monotonic() >= deadline:
                    raise
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            fail("topic %s: %s" % (topic, t.error if t else "not in metadata"))
        return sorted(t.partitions)

    def consume(self, topic, count, timeout, group, commit, session_timeout_ms):
        deadline = time.monotonic() + timeout
        consumer = self._consumer(group, session_timeout_ms)
        try:
            if group:
                consumer.subscribe([topic])
            else:
                parts = self._partitions(consumer, topic, timeout)
                consumer.assign([self.ck.TopicPartition(topic, p, self.ck.OFFSET_BEGINNING) for p in parts])
            got = 0
            while got < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("timeout: %d of %d record(s) after %ss" % (got, count, timeout), 2)
                msg = consumer.poll(min(left, 0.2))
                self._check_auth()
                if msg is None:
                    continue
                if msg.error():
                    # Transient errors (leader not available yet, ...) are retried
                    # by librdkafka; only fatal ones end the run.
                    if msg.error().fatal():
                        fail("consume: %s" % msg.error())
                    sys.stderr.write("peer.py: consume: %s\n" % msg.error())
                    continue
                ts_type, ts = msg.timestamp()
                emit(
                    record_json(
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        msg.headers(),
                        ts if ts_type != self.ck.TIMESTAMP_NOT_AVAILABLE else None,
                    )
                )
                got += 1
            if group and commit:
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()

    def committed(self, topic, group, timeout):
        consumer = self._consumer(group, 6000)
        try:
            parts = self._partitions(consumer, topic, timeout)
            tps = consumer.committed([self.ck.TopicPartition(topic, p) for p in parts], timeout=timeout)
            for tp in tps:
                if tp.error:
                    fail("committed %s[%d]: %s" % (topic, tp.partition, tp.error))
                emit({"partition": tp.partition, "offset": tp.offset if tp.offset >= 0 else -1})
        finally:
            consumer.close()


# --------------------------------------------------------------------------
# kafka-python


class KafkaPython:
    def __init__(self, args):
        import kafka

        self.kafka = kafka
        self.args = args
        # --config K=V: KafkaProducer/KafkaConsumer keyword arguments
        # (max_request_size=..., ...); numbers are passed as ints.
        self.extra = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in args.config}

    def create_topic(self, topic, partitions, exist_ok):
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.args.bootstrap)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)], timeout_ms=15000)
        except TopicAlreadyExistsError:
            if not exist_ok:
                fail("create topic %s: already exists" % topic)
        finally:
            admin.close()

    def produce(self, topic, records, compression, linger_ms, timeout):
        kwargs = {"bootstrap_servers": self.args.bootstrap, "acks": "all", "linger_ms": linger_ms}
        if compression:
            kwargs["compression_type"] = compression
        for i, r in enumerate(records):
            if any(v is None for _, v in r["headers"]):
                fail("record %d: kafka-python cannot send a null header value" % i)
            if r["key"] is None and r["value"] is None:
                fail("record %d: kafka-python cannot send a record with neither key nor value" % i)
        kwargs.update(self.extra)
        producer = self.kafka.KafkaProducer(**kwargs)
        try:
            futures = []
            for r in records:
                futures.append(
                    producer.send(
                        topic,
                        key=r["key"],
                        value=r["value"],
                        headers=r["headers"] or None,
                        partition=r["partition"],
                        timestamp_ms=r["timestamp"],
                    )
                )
            producer.flush(timeout=timeout)
            for i, f in enumerate(futures):
                try:
                    md = f.get(timeout=timeout)
                except Exception as e:  # noqa: BLE001 - report any client error
                    fail("record %d: delivery failed: %r" % (i, e))
                emit({"partition": md.partition, "offset": md.offset})
        finally:
            producer.close(timeout=5)

    def _consumer(self, group, session_timeout_ms):
        kwargs = {
            "bootstrap_servers": self.args.bootstrap,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": max(100, session_timeout_ms // 3),
        }
        kwargs.update(self.extra)
        return self.kafka.KafkaConsumer(**kwargs)

    def _partitions(self, consumer, topic, timeout):
        deadline = time.monotonic() + timeout
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return sorted(parts)
            if time.monotonic() > deadline:
                fail("topic %s: not in metadata" % topic)
            time.sleep(0.1)

    def consume(self, topic, count, timeout, group, commit, session_timeout_ms):
        TopicPartition = self.kafka.TopicPartition
        deadline = time.monotonic() + timeout
        consumer = self._consumer(group, session_timeout_ms)
        try:
            if group:
                consumer.subscribe([topic])
            else:
                tps = [TopicPartition(topic, p) for p in self._partitions(consumer, topic, timeout)]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
            got = 0
            while got < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("timeout: %d of %d record(s) after %ss" % (got, count, timeout), 2)
                batches = consumer.poll(timeout_ms=int(min(left, 0.5) * 1000), max_records=count - got)
                for tp in sorted(batches, key=lambda tp: tp.partition):
                    for m in batches[tp]:
                        emit(record_json(m.partition, m.offset, m.key, m.value, m.headers, m.timestamp))
                        got += 1
            if group and commit:
                consumer.commit()
        finally:
            consumer.close(autocommit=False)

    def committed(self, topic, group, timeout):
        consumer = self._consumer(group, 6000)
        try:
            for p in self._partitions(consumer, topic, timeout):
                off = consumer.committed(self.kafka.TopicPartition(topic, p))
                emit({"partition": p, "offset": -1 if off is None else off})
        finally:
            consumer.close(autocommit=False)


# --------------------------------------------------------------------------


def key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected K=V, got %r" % text)
    return key, value


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", required=True, help="host:port")
    common.add_argument("--topic", required=True)
    common.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    common.add_argument("--debug", default=None, help="librdkafka debug contexts (confluent only)")
    common.add_argument(
        "--config",
        action="append",
        default=[],
        type=key_value,
        metavar="K=V",
        help="extra client setting, repeatable: a librdkafka property, or a kafka-python keyword argument",
    )
    common.add_argument(
        "--oauth-token",
        default=None,
        help="confluent only: the OAUTHBEARER token to send (via oauth_cb), e.g. an expired unsecured JWT",
    )

    ap = argparse.ArgumentParser(description="Peer Kafka client for kafka-retry interop tests")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("create-topic", parents=[common])
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--exist-ok", action="store_true")

    p = sub.add_parser("produce", parents=[common])
    p.add_argument("--compression", choices=["none", "gzip", "snappy", "lz4", "zstd"], default=None)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--interval-ms", type=int, default=0,
                   help="confluent only: send one record at a time, waiting for it, then sleep this long")

    p = sub.add_parser("consume", parents=[common])
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--group", default=None, help="subscribe with this group instead of assigning all partitions")
    p.add_argument("--commit", action="store_true", help="with --group: commit after consuming")
    # Tansu completes a JoinGroup after about half the session timeout.
    p.add_argument("--session-timeout-ms", type=int, default=6000)

    p = sub.add_parser("committed", parents=[common])
    p.add_argument("--group", required=True)
    p.add_argument("--timeout", type=float, default=30.0)

    args = ap.parse_args()
    try:
        run(args)
    except SystemExit:
        raise
    except AuthenticationFailed as e:
        fail("%s: authentication failed: %s" % (args.cmd, e), 3)
    except Exception as e:  # noqa: BLE001 - one line on stderr, not a traceback
        fail("%s: %s: %s" % (args.cmd, type(e).__name__, e))


def run(args):
    client = (KafkaPython if args.client == "kafka-python" else Confluent)(args)

    if args.cmd == "create-topic":
        client.create_topic(args.topic, args.partitions, args.exist_ok)
    elif args.cmd == "produce":
        records = read_records()
        comp = None if args.compression in (None, "none") else args.compression
        if args.interval_ms:
            client.produce(args.topic, records, comp, args.linger_ms, args.timeout, args.interval_ms)
        else:
            client.produce(args.topic, records, comp, args.linger_ms, args.timeout)
    elif args.cmd == "consume":
        client.consume(args.topic, args.count, args.timeout, args.group, args.commit, args.session_timeout_ms)
    elif args.cmd == "committed":
        client.committed(args.topic, args.group, args.timeout)


if __name__ == "__main__":
    main()

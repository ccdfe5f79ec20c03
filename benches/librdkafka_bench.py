#!/usr/bin/env python3
"""librdkafka side of examples/bench_kafka.rs (through PyPI confluent-kafka).

Not meant to be run by hand: `scripts/bench-kafka` runs the Rust example,
which calls this script (with the python in KAFKA_RETRY_PYTHON) for the
librdkafka rows of its table, using the same topics, record shapes and
counts as our client. Each subcommand prints one JSON object on stdout;
diagnostics go to stderr. Exit status: 0 ok, 1 error, 2 timeout.

    produce --bootstrap B --topic T --count N --value-bytes S --keys K
            [--warmup-topic W --warmup-count M] [--linger-ms 5] [--broker-pid P]
        keyed records (key "key-%05d" % (i % K)), one header, acks=all, with
        produce() + poll(0) in a Python loop and a final flush(); the warm-up
        goes through the same producer first and is not timed.
        -> {"records", "value_bytes", "seconds", "cpu_s" (process CPU: the
            Python loop and librdkafka's threads), "broker_cpu_s" (with
            --broker-pid), "errors"}

    consume --bootstrap B --topic T --count N --group G [--session-timeout-ms 6000]
            [--batch 1000] [--timeout 120] [--broker-pid P]
        subscribes with a new group (auto.offset.reset=earliest) and reads with
        consume(num_messages=batch) until N records arrived.
        -> {"records", "value_bytes", "join_s" (constructor to on_assign),
            "first_s" (constructor to the first record),
            "seconds" (first record to last),
            "from_assign_s" (on_assign to last record),
            "max_gap_s" (longest wait between two non-empty consume() calls),
            "cpu_s" (process CPU, constructor to last record), "broker_cpu_s"}
"""

import argparse
import json
import os
import sys
import time

# Same record shape as examples/bench_kafka.rs.
HEADER_KEY = "trace"
HEADER_VALUE = b"0123456789abcdef"


def broker_cpu(pid):
    """CPU seconds used by the broker's live threads (None without a pid)."""
    if not pid:
        return None
    total = 0
    task_dir = "/proc/%s/task" % pid
    for tid in os.listdir(task_dir):
        try:
            with open("%s/%s/schedstat" % (task_dir, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # thread gone meanwhile
    return total / 1e9


def cpu_delta(pid, before):
    after = broker_cpu(pid)
    return None if before is None or after is None else after - before


def fail(msg, code=1):
    sys.stderr.write("librdkafka_bench.py: %s\n" % msg)
    sys.exit(code)


def produce(ck, args):
    errors = [0, None]

    def on_delivery(err, msg):
        # delivery.report.only.error: only failures reach Python, so the
        # check costs nothing per successful record.
        if err is not None:
            errors[0] += 1
            if errors[1] is None:
                errors[1] = str(err)

    conf = {
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": args.linger_ms,
        # Java's (and our) key -> partition mapping.
        "partitioner": "murmur2_random",
        "delivery.report.only.error": True,
        "on_delivery": on_delivery,
    }
    conf.update(extra_config(args))
    producer = ck.Producer(conf)
    keys = [("key-%05d" % k).encode() for k in range(args.keys)]
    value = bytes((i * 7) % 251 for i in range(args.value_bytes))
    headers = [(HEADER_KEY, HEADER_VALUE)]
    nkeys = len(keys)

    def run(topic, count):
        produce_ = producer.produce
        poll = producer.poll
        for i in range(count):
            while True:
                try:
                    produce_(topic, value, keys[i % nkeys], headers=headers)
                    break
                except BufferError:
                    # Local queue full (queue.buffering.max.messages):
                    # serve delivery reports until there is room.
                    poll(0.005)
            poll(0)
        left = producer.flush(args.timeout)
        if left:
            fail("%d record(s) not delivered within %ss" % (left, args.timeout), 2)

    if args.warmup_topic and args.warmup_count > 0:
        run(args.warmup_topic, args.warmup_count)
        if errors[0]:
            fail("warm-up: %d delivery error(s), first: %s" % (errors[0], errors[1]))
    start, cpu, broker = time.perf_counter(), time.process_time(), broker_cpu(args.broker_pid)
    run(args.topic, args.count)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    broker = cpu_delta(args.broker_pid, broker)
    return {
        "records": args.count,
        "value_bytes": args.count * args.value_bytes,
        "seconds": seconds,
        "cpu_s": cpu,
        "broker_cpu_s": broker,
        "errors": errors[0],
        "first_error": errors[1],
    }


def consume(ck, args):
    assigned = [None]

    def on_assign(consumer, partitions):
        if assigned[0] is None:
            assigned[0] = time.perf_counter()

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": args.session_timeout_ms,
        "enable.partition.eof": False,
    }
    conf.update(extra_config(args))
    start, cpu, broker = time.perf_counter(), time.process_time(), broker_cpu(args.broker_pid)
    consumer = ck.Consumer(conf)
    consumer.subscribe([args.topic], on_assign=on_assign)
    deadline = start + args.timeout
    got = 0
    value_bytes = 0
    first = None
    prev = None
    max_gap = 0.0
    try:
        while got < args.count:
            left = deadline - time.perf_counter()
            if left <= 0:
                fail("timeout: %d of %d record(s) after %ss" % (got, args.count, args.timeout), 2)
            msgs = consumer.consume(num_messages=args.batch, timeout=min(left, 0.5))
            if msgs:
                now = time.perf_counter()
                if prev is not None:
                    max_gap = max(max_gap, now - prev)
                prev = now
            for m in msgs:
                if m.error():
                    if m.error().fatal():
                        fail("consume: %s" % m.error())
                    continue
                if first is None:
                    first = time.perf_counter()
                # Touch every value, as our side does (it sums value lengths).
                value_bytes += len(m.value())
                got += 1
        last = time.perf_counter()
        cpu = time.process_time() - cpu
        broker = cpu_delta(args.broker_pid, broker)
    finally:
        consumer.close()
    return {
        "records": got,
        "value_bytes": value_bytes,
        "join_s": (assigned[0] - start) if assigned[0] is not None else None,
        "first_s": first - start,
        "seconds": last - first,
        "from_assign_s": last - (assigned[0] if assigned[0] is not None else first),
        "max_gap_s": max_gap,
        "cpu_s": cpu,
        "broker_cpu_s": broker,
    }


def extra_config(args):
    """`--config K=V` settings (security.protocol, ssl.ca.location, ...)."""
    out = {}
    for kv in args.config:
        k, sep, v = kv.partition("=")
        if not sep:
            fail("--config %r: expected KEY=VALUE" % kv)
        out[k.strip()] = v.strip()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--value-bytes", type=int, required=True)
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--warmup-topic", default=None)
    p.add_argument("--warmup-count", type=int, default=0)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--broker-pid", default=None, help="broker pid, to report its CPU")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka setting (TLS through a front end), repeatable")

    p = sub.add_parser("consume")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--broker-pid", default=None, help="broker pid, to report its CPU")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka setting (TLS through a front end), repeatable")

    args = ap.parse_args()
    try:
        import confluent_kafka as ck
    except ImportError as e:
        fail("cannot import confluent_kafka (%s); use scripts/python-peers' venv" % e)
    out = produce(ck, args) if args.cmd == "produce" else consume(ck, args)
    out["librdkafka"] = ck.libversion()[0]
    out["confluent_kafka"] = ck.version()[0]
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A transactional confluent-kafka (librdkafka) producer for kafka-retry's
read_committed tests.

    txn.py --bootstrap HOST:PORT --topic T --transactional-id ID \
           --txn commit:c1:3 --txn abort:a1:2 --txn commit:c2:3 [--partition P]

Each --txn ACTION:TAG:N runs one transaction writing N records with values
"TAG-0" .. "TAG-(N-1)" to partition P (default 0), then commits or aborts
it. Prints one JSON line per transaction: {"txn": i, "action": ..., "ok":
bool, "error": str|null}. Exit status 1 when init_transactions fails.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, fail  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--partition", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--txn", action="append", default=[], help="commit|abort:TAG:N")
    args = ap.parse_args()

    import confluent_kafka as ck

    producer = ck.Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "transactional.id": args.transactional_id,
            "linger.ms": 1,
            "error_cb": lambda e: sys.stderr.write("txn.py: client error: %s\n" % e),
        }
    )
    try:
        producer.init_transactions(args.timeout)
    except ck.KafkaException as e:
        fail("init_transactions: %s" % e)
    for i, spec in enumerate(args.txn):
        action, tag, n = spec.split(":")
        try:
            producer.begin_transaction()
            for j in range(int(n)):
                producer.produce(args.topic, value=("%s-%d" % (tag, j)).encode(), partition=args.partition)
            producer.flush(args.timeout)
            if action == "commit":
                producer.commit_transaction(args.timeout)
            else:
                producer.abort_transaction(args.timeout)
            emit({"txn": i, "action": action, "ok": True, "error": None})
        except ck.KafkaException as e:
            emit({"txn": i, "action": action, "ok": False, "error": str(e)})
            try:
                producer.abort_transaction(args.timeout)
            except ck.KafkaException:
                pass


if __name__ == "__main__":
    main()

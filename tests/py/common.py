"""Helpers shared by the Python peers of the tests (peer.py, bad_input.py).

Both scripts are run as `python tests/py/<script>.py ...`, so Python puts
this directory first on sys.path; each script also adds it itself, so that
`import common` works from any working directory and under `python -P`.
"""

import base64
import json
import os
import sys


def b64(data):
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


def unb64(text):
    return None if text is None else base64.b64decode(text)


def emit(obj):
    # One line per record, flushed at once: tests read stdout as a stream.
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(msg, code=1):
    """Exits with `code` after "<script name>: msg" on stderr."""
    sys.stderr.write("%s: %s\n" % (os.path.basename(sys.argv[0]), msg))
    sys.exit(code)


def read_records(header_key=str):
    """The records on stdin, one JSON object a line, bytes as base64:

        {"key": b64|null, "value": b64|null, "headers": [[key, b64|null], ...],
         "partition": int|null, "timestamp": ms|null}

    `header_key` turns a header key from the JSON into what the client
    gets (peer.py: the str itself; bad_input.py: raw bytes from base64).
    """
    records = []
    for n, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
            records.append(
                {
                    "key": unb64(obj.get("key")),
                    "value": unb64(obj.get("value")),
                    "headers": [(header_key(k), unb64(v)) for k, v in (obj.get("headers") or [])],
                    "partition": obj.get("partition"),
                    "timestamp": obj.get("timestamp"),
                }
            )
        except (ValueError, TypeError, AttributeError) as e:
            fail("stdin line %d: bad record %r: %s" % (n, line, e))
    return records

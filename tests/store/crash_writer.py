"""Child process for ``test_crash.py``: add results forever, print each acknowledged id.

Usage: ``python crash_writer.py STORE.db SENT.jsonl SEED [KEY_HEX]`` (with a
device key in hex, the store is encrypted). A sender thread
delivers the outbox to the JSON-lines file at the same time, so a kill can
land between a send and the record of its delivery. Each line printed is
``<id> <sync 0|1>``, written only after ``add`` returned (the commit is durable).
"""

from __future__ import annotations

import random
import sys
import threading
import time


def main(db: str, sent: str, seed: int, key_hex: str | None) -> None:
    from fogline.security import DeviceKey
    from fogline.store import JsonlTransport, OutboxSender, Result, ResultStore

    rng = random.Random(seed)
    key = None if key_hex is None else DeviceKey.from_hex(key_hex, "argv")
    store = ResultStore(db, key=key)
    sender = OutboxSender(store, JsonlTransport(sent), batch=5, poll_interval=0.002)
    threading.Thread(target=sender.run, args=(threading.Event(),), daemon=True).start()
    sequence = 0
    while True:
        batch = []
        for _ in range(rng.randint(1, 4)):
            outputs = {"label": rng.randrange(10), "pad": "x" * rng.randrange(200)}
            batch.append(
                Result(
                    "cam0", sequence, time.time(), "digits", "3", outputs, sync=rng.random() < 0.6
                )
            )
            sequence += 1
        ids = store.add(batch)
        sys.stdout.write("".join(f"{i} {int(r.sync)}\n" for i, r in zip(ids, batch, strict=True)))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)

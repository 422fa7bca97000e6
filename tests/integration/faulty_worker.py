"""`inventory-streams worker` with an injected fault (test double only):

- FAIL_TABLE_WRITE_AT=N: the N-th table write inside a stage batch raises (a store that rejected a
  write).
- DIE_AT_COMMIT_OF=KEY:N: at the N-th commit that writes table key KEY, the process dies after the
  batches' outputs are on the broker and before their changelog records and offsets are: a crash
  between a batch and its commit, made to happen every time instead of by chance.
- LOSE_BATCH_OF=KEY:STATUS: the batch that writes table key KEY with status STATUS loses its
  outputs (still queued in the producer when the process dies), and the commit after it writes
  that batch's changelog records before the process dies: the changelog ahead of the outputs and
  of the offsets, as a SIGKILL can leave them (the partitions reach the broker independently).
- HANG_STOPPING=1: the Kafka consumer's stop never ends (as a stop after a crash was seen to hang).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from inventory_streams.cli import main
from streams import topology
from streams.runtime import replay_window, tables

_calls = [0]
_fail_at = int(os.environ.get("FAIL_TABLE_WRITE_AT", "0"))
_die_key, _, _die_at = os.environ.get("DIE_AT_COMMIT_OF", ":0").rpartition(":")
_commits_of_key = [0]
_end_offsets_failures = [int(os.environ.get("FAIL_END_OFFSETS", "0"))]
_end_offsets = replay_window.true_end_offsets_many
_put = tables.DeferredWrites.put
_write = tables.DeferredWrites.write
_send = topology.Outputs.send
_lose_key, _, _lose_status = os.environ.get("LOSE_BATCH_OF", ":").rpartition(":")
_losing = [False]  # the batch is handled: its outputs are lost from now on
_writing_changelog = [False]


def _failing_put(self: tables.DeferredWrites, table: Any, key: bytes, value: Any) -> None:
    _calls[0] += 1
    if _calls[0] == _fail_at:
        raise OSError(f"injected: the table store rejected write {_fail_at}")
    if _lose_key and key == _lose_key.encode() and getattr(value, "status", None) == _lose_status:
        _losing[0] = True
    _put(self, table, key, value)


def _lossy_send(self: topology.Outputs, topic: str, *args: Any, **kwargs: Any) -> None:
    if _losing[0] and not _writing_changelog[0]:
        print(f"injected: an output to {topic} lost")
        sys.stdout.flush()
        return
    _send(self, topic, *args, **kwargs)


async def _dying_write(self: tables.DeferredWrites) -> None:
    if _losing[0]:
        _writing_changelog[0] = True
        await _write(self)
        remaining = self.outputs._producer.flush(10)
        print(f"injected: dying with the changelog of {_lose_key} written ({remaining} unsent)")
        sys.stdout.flush()
        os._exit(70)
    if any(key == _die_key.encode() for _, key in self.pending):
        _commits_of_key[0] += 1
        if _commits_of_key[0] == int(_die_at):
            remaining = self.outputs._producer.flush(10)  # the outputs reach the broker
            print(f"injected: dying before commit {_die_at} of {_die_key} ({remaining} unsent)")
            sys.stdout.flush()
            os._exit(70)
    await _write(self)


def _unreachable_end_offsets(*args: Any, **kwargs: Any) -> dict[tuple[str, int], int]:
    if _end_offsets_failures[0] > 0:
        _end_offsets_failures[0] -= 1
        print("injected: end offsets read with every broker down")
        sys.stdout.flush()
        raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    return _end_offsets(*args, **kwargs)


replay_window.true_end_offsets_many = _unreachable_end_offsets
tables.DeferredWrites.put = _failing_put  # type: ignore[method-assign]
tables.DeferredWrites.write = _dying_write  # type: ignore[method-assign]
topology.Outputs.send = _lossy_send  # type: ignore[method-assign]

if os.environ.get("HANG_STOPPING"):
    import asyncio

    from faust.transport.drivers import aiokafka as faust_aiokafka

    async def _hanging_stop(self: Any) -> None:
        print("injected: the consumer's stop hangs")
        sys.stdout.flush()
        await asyncio.sleep(3600)

    faust_aiokafka.Consumer.on_stop = _hanging_stop  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

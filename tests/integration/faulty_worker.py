"""`inventory-streams worker` whose table writes fail once: a store that rejected a write.

Test double only: FAIL_TABLE_WRITE_AT=N makes the N-th table write inside a stage batch raise.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from inventory_streams.cli import main
from streams import topology

_calls = [0]
_fail_at = int(os.environ.get("FAIL_TABLE_WRITE_AT", "0"))
_put = topology.DeferredWrites.put


def _failing_put(self: topology.DeferredWrites, table: Any, key: bytes, value: Any) -> None:
    _calls[0] += 1
    if _calls[0] == _fail_at:
        raise OSError(f"injected: the table store rejected write {_fail_at}")
    _put(self, table, key, value)


topology.DeferredWrites.put = _failing_put  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

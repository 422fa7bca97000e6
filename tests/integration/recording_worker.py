"""`inventory-streams worker` that writes down, in order, every hold and release its SKU stage
applies: the order each SKU took its requests in, which no topic records (the stage merges a
partition of inventory.events with one of inventory.commands).

Test double only: HOLD_ORDER_FILE names the file; one JSON line per TryHold / ReleaseHold, written
before the next is applied, so the file's order is the order of application.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from inventory_streams.cli import main
from streams.core.sku import ReleaseHold, TryHold
from streams.stages import skus

_fd = os.open(os.environ["HOLD_ORDER_FILE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
_apply = skus.apply_sku  # the SKU stage's rules, as the Faust runner calls them


def _recording_apply(state: Any, command: Any, catalog: Any) -> Any:
    if isinstance(command, TryHold | ReleaseHold):
        kind = "try" if isinstance(command, TryHold) else "release"
        line = {"sku": command.sku, "kind": kind, "rid": command.reservation_id}
        os.write(_fd, (json.dumps(line) + "\n").encode())
    return _apply(state, command, catalog)


skus.apply_sku = _recording_apply

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

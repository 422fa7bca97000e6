"""Raw HTTP for tests of what servers refuse: bytes no client library would send."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def answer(port: int, request: bytes, wait: float = 5.0) -> tuple[int, dict[str, str], Any]:
    """`request` as bytes on a socket of its own to 127.0.0.1:`port`; the status, headers and
    JSON body of the first answer (read by its Content-Length; None without one, as after an
    interim `100 Continue`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
    lines = head.decode("latin-1").strip().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    body = None
    if "Content-Length" in headers:
        body = json.loads(
            await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), wait)
        )
    writer.close()
    return int(lines[0].split()[1]), headers, body

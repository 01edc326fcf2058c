"""Reading the head of an HTTP request (request line and headers) within fixed bounds, for the
worker's own endpoint (``worker/runtime/operations.py``): a head over them is refused, never a crash."""

from __future__ import annotations

import asyncio
import contextlib

from jobs.errors import WorkerError

MAX_LINE = 8192  # bytes of the request line or of one header line
MAX_HEADERS = 100
MAX_HEAD_BYTES = 32768  # the headers together
DISCARD_BYTES = 1 << 20  # what a refused client may still send before the connection closes
DISCARD_SECONDS = 1.0
TOO_LONG = f"a line of the request is over {MAX_LINE} bytes"


class HeadRefused(WorkerError):
    """{reason}"""


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One line of the head, at most ``MAX_LINE`` bytes (the stream's limit)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        line = exc.partial  # the client closed: what it sent is the last line
    except asyncio.LimitOverrunError:  # no end of line within the limit
        raise HeadRefused(status=431, reason=TOO_LONG) from None
    if len(line) > MAX_LINE:
        raise HeadRefused(status=431, reason=TOO_LONG)
    return line


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """The method, path (without its query) and headers (names in lower case, values stripped; a
    header sent twice has its values joined by ", ") of a request. ``reader`` must have been made
    with ``limit=MAX_LINE``. Raises HeadRefused (``status`` 400 or 431)."""
    request = (await _line(reader)).decode("latin-1").split()
    if len(request) < 2:
        raise HeadRefused(status=400, reason="expected a request line: GET /metrics HTTP/1.1")
    headers: dict[str, str] = {}
    size = count = 0
    while (line := await _line(reader)).strip():  # a blank line (or the end) ends the head
        size, count = size + len(line), count + 1
        if count > MAX_HEADERS or size > MAX_HEAD_BYTES:
            raise HeadRefused(
                status=431,
                reason=f"more than {MAX_HEADERS} headers or {MAX_HEAD_BYTES} bytes of them",
            )
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:  # a line without a colon is no header: ignored
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return request[0], request[1].split("?", 1)[0], headers


async def discard_rest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After refusing a request: send the answer, then read and drop what the client still sends
    (bounded), so that closing does not reset the connection before the client reads it."""
    with contextlib.suppress(ConnectionError, TimeoutError, OSError):
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(DISCARD_SECONDS):
            left = DISCARD_BYTES
            while left > 0 and (chunk := await reader.read(min(left, 65536))):
                left -= len(chunk)

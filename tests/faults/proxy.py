"""A TCP proxy in front of PostgreSQL or Redis that a test can cut off and restore."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class _Link:
    """One proxied connection; a silent one forwards nothing (its bytes are read and dropped)."""

    __slots__ = ("silent",)

    def __init__(self, silent: bool) -> None:
        self.silent = silent


class Proxy:
    """Forwards 127.0.0.1:<port> to a target. ``cut()`` resets every connection and refuses new
    ones (as a server that went away); ``restore()`` accepts again on the same port;
    ``drop_replies()`` loses the replies of chosen requests (the server ran them);
    ``black_hole()`` stops forwarding but keeps the sockets open (a peer that lost power, a frozen
    VM, a failover that moved the address, a load balancer's idle drop)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.pattern = b""
        self.to_drop = 0
        self.dropped = 0  # replies lost so far (read from the test's thread)
        self.links: set[_Link] = set()
        self.silent_new = False  # black_hole(new_connections=True) until restore()
        self.cuts = 0  # how many cuts so far: a connection accepted before one does not survive it

    def start(self) -> Proxy:
        self.thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Close the listener and reset every open connection."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port (after ``cut``); forward new connections again (after
        ``black_hole``: the connections it silenced stay silent)."""
        self._call(self._restore())

    def black_hole(self, new_connections: bool = False) -> None:
        """Stop forwarding on every open connection and keep its sockets open: bytes either way
        are read and dropped. New connections forward as usual (as after a failover or a load
        balancer's idle drop), or with ``new_connections`` are accepted and never answered."""
        self._call(self._black_hole(new_connections))

    def drop_replies(self, pattern: bytes, count: int = 1) -> None:
        """For each of the next ``count`` requests that contain ``pattern``: forward it, then reset
        the connection when the server's reply arrives, instead of passing the reply on."""

        def arm() -> None:
            self.pattern, self.to_drop = pattern, count

        self.loop.call_soon_threadsafe(arm)

    def stop(self) -> None:
        self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        cuts = self.cuts  # the connections this listener accepts die with the next cut

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.cuts != cuts:  # accepted before a cut, handled after it
                writer.transport.abort()
                return
            await self._serve(reader, writer, cuts)

        self.server = await asyncio.start_server(serve, "127.0.0.1", self.port, reuse_address=True)

    async def _restore(self) -> None:
        self.silent_new = False
        if self.server is None:
            await self._listen()

    async def _black_hole(self, new_connections: bool) -> None:
        for link in self.links:
            link.silent = True
        self.silent_new = self.silent_new or new_connections

    async def _cut(self) -> None:
        self.cuts += 1
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            _reset(writer)
        self.writers.clear()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cuts: int
    ) -> None:
        link = _Link(self.silent_new)
        if link.silent:  # accepted, never answered: nothing upstream
            self.writers.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            self.writers.discard(writer)
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self.cuts != cuts:  # cut while this connection was being set up: reset it as well
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.writers.update((writer, up_writer))
        awaited = [0]  # requests of this connection whose reply is to be lost
        self.links.add(link)
        await asyncio.gather(
            self._pipe(reader, up_writer, requests=awaited, link=link),
            self._pipe(up_reader, writer, replies=awaited, other=up_writer, link=link),
            return_exceptions=True,
        )
        self.links.discard(link)
        self.writers.difference_update((writer, up_writer))

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        requests: list[int] | None = None,
        replies: list[int] | None = None,
        other: asyncio.StreamWriter | None = None,
        link: _Link | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if link is not None and link.silent:
                    continue  # a black hole: read and dropped
                if requests is not None and self.to_drop and self.pattern in data:
                    self.to_drop -= 1
                    requests[0] += 1
                if replies is not None and replies[0] and other is not None:
                    self.dropped += 1  # the server answered: lose it, reset both sides
                    _reset(writer)
                    _reset(other)
                    return
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort a connection with a RST rather than a FIN: the peer sees a reset connection."""
    transport = writer.transport
    with contextlib.suppress(OSError):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    transport.abort()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

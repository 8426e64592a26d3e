"""A TCP proxy for fault tests: forwards to a server and can cut a connection mid-stream."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["CuttingProxy"]


class CuttingProxy:
    """Listens on an ephemeral loopback port, in the test's event loop.

    ``cut_after``: once that many bytes went from the server to the client on one
    connection, both sides are aborted (as a network failure would); None forwards all.
    ``cuts`` counts the connections cut so far.
    """

    def __init__(self, target_port: int, *, cut_after: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        up = asyncio.ensure_future(self._pipe(client_r, server_w, None))
        down = asyncio.ensure_future(self._pipe(server_r, client_w, self.cut_after))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in (up, down):
                pipe.cancel()
            for writer in (client_w, server_w):
                writer.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if limit is not None and sent + len(data) >= limit:
                    writer.write(data[: max(0, limit - sent)])
                    self.cuts += 1
                    return
                writer.write(data)
                sent += len(data)
                await writer.drain()

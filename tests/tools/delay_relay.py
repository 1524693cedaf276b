"""A TCP relay that holds every chunk DELAY seconds in each direction (netem's delay, which
this kernel lacks). Order is kept; the relay stops when killed. After a SIGUSR1 it passes
nothing more on from upstream, and the other way as before: what a server sends stops
arriving, what its client sends arrives (each TCP connection's side stays healthy).

usage: python delay_relay.py DELAY LISTEN_HOST:PORT=UPSTREAM_HOST:PORT [...]
"""

import asyncio
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
               passing: asyncio.Event | None = None):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def feed():
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((0.0, b""))

    async def release():
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            if passing is not None:
                await passing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()

    await asyncio.gather(feed(), release(), return_exceptions=True)


def serve(upstream_host: str, upstream_port: int, delay: float, passing: asyncio.Event):
    async def on_client(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer, delay),
                             pipe(up_reader, writer, delay, passing), return_exceptions=True)

    return on_client


async def main(delay: float, routes: list[str]):
    passing = asyncio.Event()  # what comes from upstream is passed on (until SIGUSR1)
    passing.set()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, passing.clear)
    servers = []
    for route in routes:
        listen, upstream = route.split("=")
        lhost, lport = listen.rsplit(":", 1)
        uhost, uport = upstream.rsplit(":", 1)
        servers.append(await asyncio.start_server(serve(uhost, int(uport), delay, passing),
                                                  lhost, int(lport)))
    print("relaying", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), sys.argv[2:]))

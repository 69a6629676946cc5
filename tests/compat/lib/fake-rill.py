#!/usr/bin/env python3
"""Stand-in for `rill serve`, to check the suites' broker harness before rill exists.

Usage (as RILL_BIN):  fake-rill.py serve --listen 127.0.0.1:0 --data-dir DIR
It listens on the given loopback address, prints `rill listening on 127.0.0.1:PORT` exactly
like rill, and forwards every connection to FAKE_RILL_UPSTREAM (an Apache Kafka, e.g. from
scripts/kafka-local). Kafka's metadata then points clients at Kafka itself, so this checks
the harness (start, ready line, stop, restart on the same data dir), not a broker.
"""
import argparse
import asyncio
import os
import signal
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["serve"])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--data-dir", required=True)
    a = ap.parse_args()
    up_host, up_port = os.environ["FAKE_RILL_UPSTREAM"].rsplit(":", 1)
    host, port = a.listen.rsplit(":", 1)
    os.makedirs(a.data_dir, exist_ok=True)

    async def handle(r, w):
        ur, uw = await asyncio.open_connection(up_host, int(up_port))
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    server = await asyncio.start_server(handle, host, int(port))
    bound = server.sockets[0].getsockname()
    print(f"rill listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)

"""A TCP relay: serves a listener that exists on loopback only (kube-apiserver) on another address of this machine
(the local node's IP), so that pods reach the API server through the `kubernetes` Service while kube-apiserver
keeps listening on 127.0.0.1. Bytes pass through untouched (TLS ends at kube-apiserver).

Run as `python -m access_hygiene.localcluster.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT`.
"""

import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def relay(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, target_writer), _pipe(target_reader, client_writer))
        finally:
            for writer in (client_writer, target_writer):
                writer.close()

    server = await asyncio.start_server(handle, listen_host, listen_port)
    print(f"Relay started: {listen_host}:{listen_port} -> {target_host}:{target_port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: python -m access_hygiene.localcluster.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT")
        return 2
    asyncio.run(relay(args[0], int(args[1]), args[2], int(args[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A TCP relay: serves a listener that exists on loopback only (kube-apiserver) on another address of this machine
(the local node's IP), so that pods reach the API server through the `kubernetes` Service while kube-apiserver
keeps listening on 127.0.0.1. Bytes pass through untouched (TLS ends at kube-apiserver).

With `--listen-netns=PATH` the listener lives in that network namespace (e.g. /var/run/netns/NAME) while the
connections to the target are made from the namespace the relay started in.

Run as `python -m access_hygiene.localcluster.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
[--listen-netns=PATH]`.
"""

import asyncio
import contextlib
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def listen_socket(host: str, port: int, netns: str | None) -> socket.socket:
    """A listening socket, created in `netns` when given (the caller's namespace is restored afterwards: a socket
    keeps the namespace it was made in)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY) if netns is not None else None
    try:
        if target is not None:
            _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        finally:
            if target is not None:
                _setns(own)
    finally:
        os.close(own)
        if target is not None:
            os.close(target)
    return sock


async def relay(listen: socket.socket, target_host: str, target_port: int) -> None:
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

    server = await asyncio.start_server(handle, sock=listen)
    print(f"Relay started: {listen.getsockname()} -> {target_host}:{target_port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    netns = next((a.split("=", 1)[1] for a in args if a.startswith("--listen-netns=")), None)
    positional = [a for a in args if not a.startswith("--")]
    if len(positional) != 4:
        print("usage: python -m access_hygiene.localcluster.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT"
              " [--listen-netns=PATH]")  # fmt: skip
        return 2
    listen = listen_socket(positional[0], int(positional[1]), netns)
    asyncio.run(relay(listen, positional[2], int(positional[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`fabricctl`: ask the running fabricd what it is doing."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fabricd.cli.render import render_events, render_routes, render_status
from fabricd.cli.render_authority import render_leases
from fabricd.control_protocol import MAX_MESSAGE_BYTES, ProtocolError, decode, encode

DEFAULT_SOCKET = Path("/run/fabricd/fabricd.sock")
SOCKET_ENV = "FABRICD_SOCKET"

DESCRIPTION = """\
fabricctl shows what the local fabricd is doing: BGP peers, announced and refused routes with
their next hops and reasons, overlay peers, and the DHCP/DNS authority with its leases.

The socket is found in this order: --socket, $FABRICD_SOCKET, control.socket from --config,
then /run/fabricd/fabricd.sock.

examples:
  fabricctl status            # readable summary
  fabricctl status --json     # the same as JSON: host, bgp_peers, routes, overlay_peers, authority
  fabricctl routes --json     # the full route table
  fabricctl events            # the last decisions (announce, withdraw, refuse, peer) with reasons
  fabricctl leases            # the DHCP lease table (on the host that serves DHCP/DNS)
"""


class AgentUnreachable(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabricctl", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", "-s", type=Path, help="fabricd control socket")
    parser.add_argument("--config", "-c", type=Path, help="read the socket path from this fabricd config")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the agent (default 5)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("status", "summary of everything the agent does"),
        ("routes", "the full route table"),
        ("events", "the last decisions with their reasons, oldest first"),
        ("leases", "the DHCP leases, when this host is the DHCP/DNS authority"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def resolve_socket(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if os.environ.get(SOCKET_ENV):
        return Path(os.environ[SOCKET_ENV])
    if args.config is not None:
        from fabricd.config import load_config

        return load_config(args.config).control.socket
    return DEFAULT_SOCKET


def request(path: Path, command: str, timeout: float) -> dict[str, Any]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(str(path))
        except FileNotFoundError:
            raise AgentUnreachable(f"no control socket at {path} (is fabricd running?)") from None
        except ConnectionRefusedError:
            raise AgentUnreachable(f"nothing listens on {path} (fabricd is not running)") from None
        except PermissionError:
            raise AgentUnreachable(
                f"permission denied on {path} (run as root or as the socket's group)"
            ) from None
        conn.sendall(encode({"command": command}))
        reply = _read_line(conn)
    except TimeoutError:
        raise AgentUnreachable(f"fabricd did not answer on {path} within {timeout:g}s") from None
    except OSError as exc:
        raise AgentUnreachable(f"cannot talk to fabricd on {path}: {exc.strerror or exc}") from None
    finally:
        conn.close()
    try:
        message = decode(reply)
    except ProtocolError as exc:
        raise AgentUnreachable(f"unreadable reply from {path}: {exc}") from None
    if not message.get("ok"):
        if command == "leases" and "unknown command" in str(message.get("error")):
            raise AgentUnreachable("the DHCP/DNS authority is not enabled on this host (dhcp.enabled)")
        raise AgentUnreachable(f"fabricd refused {command!r}: {message.get('error')}")
    result = message.get("result")
    if not isinstance(result, dict):
        raise AgentUnreachable(f"unreadable reply from {path}: no result")
    return result


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_MESSAGE_BYTES:
            break
    return b"".join(chunks)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = resolve_socket(args)
        result = request(path, args.command, args.timeout)
    except AgentUnreachable as exc:
        print(f"fabricctl: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. a bad --config: one line, never a traceback
        print(f"fabricctl: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.command == "routes":
        print(render_routes(result.get("routes", [])))
    elif args.command == "events":
        print(render_events(result.get("events", [])))
    elif args.command == "leases":
        print(render_leases(result.get("leases", []), result.get("authority")))
    else:
        print(render_status(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

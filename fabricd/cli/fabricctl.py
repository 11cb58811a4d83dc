"""`fabricctl`: ask the running fabricd what it is doing."""

from __future__ import annotations

import argparse
import grp
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fabricd.agent.health import DEGRADED, HEALTHY, UNREACHABLE, Verdict, verdict
from fabricd.cli.render import render_check, render_events, render_peers, render_routes, render_status
from fabricd.cli.render_authority import render_leases
from fabricd.cli.render_services import render_drain, render_services
from fabricd.control_protocol import MAX_MESSAGE_BYTES, ProtocolError, decode, encode

DEFAULT_SOCKET = Path("/run/fabricd/fabricd.sock")
SOCKET_ENV = "FABRICD_SOCKET"

DESCRIPTION = """\
fabricctl shows what the local fabricd is doing: BGP peers, announced and refused routes with
their next hops and reasons, overlay peers, and the DHCP/DNS authority with its leases.

The socket is found in this order: --socket, $FABRICD_SOCKET, control.socket from --config,
then /run/fabricd/fabricd.sock.

exit codes (every command, so any of them works as a monitoring check):
  0  healthy: the agent answered and has no problem
  1  unreachable: no agent, no permission on the socket, no answer in time, or a bad --config
  3  degraded: the agent answered, but lists a problem (LXD unreachable, a failing reconcile step,
     a second DHCP server, no DHCP/DNS authority...), a BGP session is not established, or a route
     is refused. `fabricctl check` prints the reasons on one line.

examples:
  fabricctl status            # readable summary
  fabricctl status --json     # the same as JSON: host, bgp_peers, routes, overlay_peers, authority, health
  fabricctl peers             # BGP sessions (state, uptime, routes sent, flaps) and overlay peers
  fabricctl check             # one line: FABRICD OK / FABRICD DEGRADED - reasons (a Nagios check)
  fabricctl routes --json     # the full route table
  fabricctl events            # the last decisions (announce, withdraw, refuse, peer) with reasons
  fabricctl leases            # the DHCP lease table (on the host that serves DHCP/DNS)
  fabricctl services          # anycast services: each address's announcement state, each backend's health
  fabricctl drain             # drain the whole host: GRACEFUL_SHUTDOWN, then withdraw after drain_delay
  fabricctl drain --service dns
  fabricctl undrain [--service dns]

drain and undrain change state: they need the same access to the socket as every other command
(root, or control.group), and the drain is kept in a file, so it survives an agent restart.
"""

COMMANDS = (
    ("status", "summary of everything the agent does"),
    ("peers", "BGP sessions with their state and routes sent, and the overlay peers"),
    ("check", "the health verdict on one line, for monitoring"),
    ("routes", "the full route table"),
    ("events", "the last decisions with their reasons, oldest first"),
    ("leases", "the DHCP leases, when this host is the DHCP/DNS authority"),
    ("services", "anycast services: addresses and their announcement state, backends and their health"),
    ("drain", "drain the host (or --service S): GRACEFUL_SHUTDOWN and a worse MED, then withdraw"),
    ("undrain", "end a drain of the host (or --service S)"),
)
DRAIN_COMMANDS = ("drain", "undrain")
# Views whose JSON carries the verdict beside the agent's reply.
WITH_HEALTH = ("status", "peers")
# What each view asks the agent: a command and its args. `peers` asks only for its status keys.
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "peers": ("sections", {"keys": ["bgp_peers", "bfd_sessions", "overlay", "overlay_peers"]}),
    "check": ("health", {}),  # the verdict alone: no route table crosses the socket
    "services": ("sections", {"keys": ["services"]}),
}


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
    for name, text in COMMANDS:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name in DRAIN_COMMANDS:
            sub.add_argument("--service", help="only this service (default: the whole host)")
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


def permission_hint(path: Path) -> str:
    """Who may use the socket: its group, or why the caller cannot even reach it."""
    try:
        gid = path.stat().st_gid
    except PermissionError:
        return _closed_directory_hint(path.parent)
    except OSError:
        return "run as root"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    if group == "root":
        return "run as root, or set control.group in fabricd.yaml and join that group"
    return f"run as root or as a member of group {group}"


def _closed_directory_hint(directory: Path) -> str:
    """The socket's directory cannot be searched: fabricd opens it to control.group (0710), so a
    directory of another group than root names the group that may get in."""
    try:
        gid = directory.stat().st_gid
        group = grp.getgrgid(gid).gr_name if gid != 0 else "root"
    except (OSError, KeyError):
        group = "root"
    if group == "root":
        return f"run as root ({directory} is closed to this user; control.group in fabricd.yaml opens it)"
    return f"run as root or as a member of group {group} ({directory} is closed to others)"


def request(path: Path, command: str, timeout: float) -> dict[str, Any]:
    return exchange(path, command, timeout)[0]


def exchange(
    path: Path, command: str, timeout: float, args: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The agent's result and its health verdict (None from an agent that sends none)."""
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
            raise AgentUnreachable(f"permission denied on {path}: {permission_hint(path)}") from None
        conn.sendall(encode({"command": command, **({"args": args} if args else {})}))
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
    health = message.get("health")
    return result, health if isinstance(health, dict) else None


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


def exit_code(command: str, result: dict[str, Any], health: dict[str, Any] | None) -> Verdict:
    """The verdict to exit with: the agent's own; worked out here from a status reply otherwise."""
    if health is not None and health.get("code") in (HEALTHY, DEGRADED):
        return Verdict(int(health["code"]), tuple(str(r) for r in health.get("reasons") or ()))
    if command == "status":
        return verdict(result)
    return Verdict(HEALTHY)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command, command_args = REQUESTS.get(args.command, (args.command, {}))
    if args.command in DRAIN_COMMANDS and args.service is not None:
        command_args = {"service": args.service}
    try:
        path = resolve_socket(args)
        result, health = exchange(path, command, args.timeout, command_args)
    except AgentUnreachable as exc:
        print(f"fabricctl: {exc}", file=sys.stderr)
        return UNREACHABLE
    except Exception as exc:  # e.g. a bad --config: one line, never a traceback
        print(f"fabricctl: {exc}".splitlines()[0], file=sys.stderr)
        return UNREACHABLE
    found = exit_code(command, result, health if command != "health" else result)
    if args.json:
        shown = {**result, "health": found.as_dict()} if args.command in WITH_HEALTH else result
        print(json.dumps(shown, indent=2, sort_keys=True))
    elif args.command == "check":
        print(render_check(found))
    elif args.command == "peers":
        print(render_peers(result))
    elif args.command == "routes":
        print(render_routes(result.get("routes", [])))
    elif args.command == "events":
        print(render_events(result.get("events", [])))
    elif args.command == "services":
        print(render_services(result.get("services")))
    elif args.command in DRAIN_COMMANDS:
        print(render_drain(result))
    elif args.command == "leases":
        print(render_leases(result.get("leases", []), result.get("authority")))
    else:
        print(render_status(result))
    return found.code


if __name__ == "__main__":
    sys.exit(main())

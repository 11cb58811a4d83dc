"""`fabricd`: run the agent or check a config file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fabricd import __version__
from fabricd.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from fabricd.config.unbuilt import unbuilt_settings
from fabricd.log import configure_logging

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_CONFIG = 0, 1, 2

DESCRIPTION = """\
fabricd is the per-host network fabric agent for multi-host LXD. It watches LXD through its API,
builds the VXLAN overlay, keeps exactly one DHCP/DNS authority (dnsmasq) on it, announces routes
through ExaBGP, and announces anycast service addresses while a local backend passes its health
check.

examples:
  fabricd check-config /etc/fabricd/fabricd.yaml   # validate; exit 2 names file, key and line
  fabricd run --config /etc/fabricd/fabricd.yaml   # run in the foreground (systemd does this)
  fabricctl status                                 # ask the running agent what it is doing
  fabricd teardown --config /etc/fabricd/fabricd.yaml  # stop first; removes the overlay it built
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabricd", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fabricd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the agent in the foreground",
        description="Run the agent in the foreground until SIGTERM or SIGINT. The config is validated "
        "first; nothing is started when it is invalid (exit 2).",
    )
    run.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"config file (default {DEFAULT_CONFIG_PATH})",
    )
    run.add_argument("--log-format", choices=("auto", "json", "console"), help="override logging.format")
    run.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level"
    )

    teardown = commands.add_parser(
        "teardown",
        help="remove everything fabricd built on this host (the agent must be stopped)",
        description="Remove what fabricd built: the overlay's VXLAN device with its FDB, the bridge "
        "when fabricd created it (an adopted bridge stays), the nftables table inet fabricd_overlay, "
        "and fabricd's state files. Instances attached to the bridge lose the overlay. Stopping the "
        "agent alone leaves the overlay up on purpose, so instances keep talking across a restart. "
        "Refuses (exit 1) while the agent answers on its control socket.",
    )
    teardown.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"config file (default {DEFAULT_CONFIG_PATH})",
    )

    check = commands.add_parser(
        "check-config",
        help="validate a config file and exit",
        description="Validate a config file. Exit 0 when valid; exit 2 and print one line per problem "
        "(file:line: key.path: what was expected) when not.",
    )
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG_PATH, help="config file to check")
    return parser


def _load_or_report(path: Path) -> int | None:
    try:
        load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_CONFIG
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        failed = _load_or_report(args.file)
        if failed is not None:
            return failed
        for key, why in unbuilt_settings(load_config(args.file)):
            print(f"{args.file}: {key}: warning: {why}", file=sys.stderr)
        print(f"{args.file}: ok")
        return EXIT_OK
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.command == "teardown":
        configure_logging(config.logging.level, config.logging.format)
        from fabricd.cli.teardown import teardown  # imported late: needs netlink

        return teardown(config)
    configure_logging(args.log_level or config.logging.level, args.log_format or config.logging.format)
    from fabricd.agent.daemon import run_agent  # imported late: check-config must stay light

    return run_agent(config)


if __name__ == "__main__":
    sys.exit(main())

"""Load and validate fabricd.yaml, reporting every problem with its file, key path and line.

The YAML is composed into nodes (never constructed into Python objects) so each value keeps the
line it came from. The reader (`fabricd.config.reader`) walks the nodes section by section, with
one parser per section in `fabricd.config.sections`, and collects every problem in one pass.
"""

from __future__ import annotations

from pathlib import Path

from yaml.nodes import Node

from fabricd.config.errors import ConfigError, ConfigProblem
from fabricd.config.model import (
    ControlConfig,
    DaemonConfig,
    DHCPConfig,
    FabricConfig,
    LoggingConfig,
    LXDConfig,
    MetricsConfig,
    OverlayConfig,
    ReconcileConfig,
    RoutesConfig,
)
from fabricd.config.reader import Context, Invalid, Value
from fabricd.config.sections.bgp import parse_bgp
from fabricd.config.sections.daemon import (
    parse_control,
    parse_daemon,
    parse_logging,
    parse_metrics,
    parse_reconcile,
)
from fabricd.config.sections.dhcp import parse_dhcp
from fabricd.config.sections.host import parse_host, parse_lxd
from fabricd.config.sections.overlay import parse_overlay
from fabricd.config.sections.routes import parse_routes
from fabricd.config.sections.services import parse_services
from fabricd.yaml_lines import YamlSyntaxError, compose

__all__ = ["load_config", "load_config_text"]

_SECTIONS = (
    "host",
    "lxd",
    "bgp",
    "overlay",
    "dhcp",
    "services",
    "routes",
    "control",
    "metrics",
    "logging",
    "reconcile",
    "daemon",
)


def _parse_root(root: Value, source: Path) -> FabricConfig:
    m = root.mapping(_SECTIONS)
    host = m.require("host", parse_host)
    lxd = m.get("lxd", parse_lxd, LXDConfig())
    bgp = m.get("bgp", lambda v: parse_bgp(v, host), None)
    parsed_overlay = m.get("overlay", lambda v: parse_overlay(v, host), None)
    overlay = parsed_overlay or OverlayConfig()
    # A broken overlay section is reported once: dhcp's checks against it are skipped (None).
    overlay_known = parsed_overlay is not None or not m.has("overlay")
    dhcp = m.get("dhcp", lambda v: parse_dhcp(v, host, overlay if overlay_known else None), DHCPConfig())
    services = m.get("services", parse_services, ())
    routes = m.get("routes", parse_routes, RoutesConfig())
    control = m.get("control", parse_control, ControlConfig())
    metrics = m.get("metrics", parse_metrics, MetricsConfig())
    logging = m.get("logging", parse_logging, LoggingConfig())
    reconcile = m.get("reconcile", parse_reconcile, ReconcileConfig())
    daemon = m.get("daemon", parse_daemon, DaemonConfig())
    if not m.clean() or host is None:
        raise Invalid
    return FabricConfig(
        source, host, lxd, bgp, overlay, dhcp, services, routes, control, metrics, logging, reconcile, daemon
    )


def _compose(text: str, file: str) -> Node | None:
    try:
        return compose(text)
    except YamlSyntaxError as exc:
        problem = ConfigProblem(file, "", exc.line, f"invalid YAML: {'; '.join(exc.details)}")
    raise ConfigError([problem])


def _load(text: str, file: str, source: Path) -> FabricConfig:
    root = _compose(text, file)
    if root is None:
        raise ConfigError([ConfigProblem(file, "", None, "the file is empty; a 'host' section is needed")])
    ctx = Context(file)
    try:
        config = _parse_root(Value(ctx, "", root), source)
    except Invalid:
        pass
    else:
        if not ctx.problems:
            return config
    # File order reads best; a stable sort keeps problems on one line in the order found.
    raise ConfigError(sorted(ctx.problems, key=lambda p: p.line or 0))


def load_config_text(text: str, source: str = "<string>") -> FabricConfig:
    """Validate config text; `source` names it in problems and becomes `FabricConfig.source`."""
    return _load(text, source, Path(source))


def load_config(path: str | Path) -> FabricConfig:
    """Read and validate a config file; raises ConfigError listing every problem found."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(file, "", None, message)]) from exc
    except UnicodeDecodeError as exc:
        message = f"the file is not valid UTF-8 (bad byte at offset {exc.start})"
        raise ConfigError([ConfigProblem(file, "", None, message)]) from exc
    return _load(text, file, Path(path))

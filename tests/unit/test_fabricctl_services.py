"""fabricctl services, drain and undrain against a stand-in agent on a real unix socket."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fabricd.cli.render_services import render_drain, render_services
from tests.unit.test_fabricctl_exit_codes import PEERS_UP, FakeAgent, ctl, fake_agent, status


def section() -> dict[str, Any]:
    """The services section as the agent sends it, drained 5 s before now."""
    return {
        "drain": {"host": None, "services": {"web": time.time() - 5}},
        "services": [
            {
                "name": "web",
                "source": "config",
                "project": "default",
                "check": "tcp port 8080 every 0.5 s (timeout 0.4 s, rise 2, fall 2)",
                "drained_since": time.time() - 5,
                "backends": [
                    {
                        "instance": "web-1",
                        "project": "default",
                        "device": "lxdbr0",
                        "addresses": ["10.210.1.11", "fd00:210:1::11"],
                        "state": "drained",
                        "reason": "drained",
                        "since_seconds": 5.0,
                        "last_result": {"ok": True, "reason": "connected in 0.4 ms", "seconds_ago": 0.2},
                    },
                    {
                        "instance": "web-9",
                        "project": "default",
                        "device": "",
                        "addresses": [],
                        "state": "excluded",
                        "reason": "instance is stopped",
                        "since_seconds": None,
                        "last_result": None,
                    },
                ],
                "addresses": [
                    {"address": "10.250.0.80", "state": "draining", "reason": "draining: GRACEFUL_SHUTDOWN"},
                    {"address": "fd00:250::80", "state": "draining", "reason": "draining: GRACEFUL_SHUTDOWN"},
                ],
            }
        ],
        "problems": [{"service": "dns", "project": "default", "instance": "d1", "reason": "disagrees"}],
        "host_routes": [],
    }


class ServicesAgent(FakeAgent):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.args: list[dict[str, Any]] = []

    def _result(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        self.args.append(args)
        if command in ("drain", "undrain"):
            return {
                "drain": {"host": 1.0 if command == "drain" and not args else None, "services": {}},
                "note": "",
            }
        return super()._result(command, args)


def test_services_asks_only_for_its_section_and_shows_addresses_backends_and_refusals(tmp_path: Path) -> None:
    with fake_agent(tmp_path, {**status(PEERS_UP), "services": section()}) as agent:
        out = ctl(agent.path, "services")
        assert out.returncode == 0, out.stderr
        assert agent.commands == ["sections"]
        as_json = ctl(agent.path, "services", "--json")
    text = out.stdout
    assert "web drained 5s ago" in text
    assert "10.250.0.80   draining" in text and "fd00:250::80" in text
    assert (
        "web-1" in text and "pass 0.2s ago" in text and "excluded" in text and "instance is stopped" in text
    )
    assert "REFUSED SERVICE" in text and "disagrees" in text
    assert json.loads(as_json.stdout)["services"]["services"][0]["name"] == "web"


def test_services_from_an_agent_without_the_section_says_so(tmp_path: Path) -> None:
    with fake_agent(tmp_path, status(PEERS_UP)) as agent:
        out = ctl(agent.path, "services")
    assert out.returncode == 0 and "services: none" in out.stdout


def test_drain_and_undrain_send_the_service_only_when_named(tmp_path: Path) -> None:
    agent = ServicesAgent(tmp_path / "fabricd.sock", status(PEERS_UP))
    try:
        drained = ctl(agent.path, "drain")
        one = ctl(agent.path, "undrain", "--service", "web")
    finally:
        agent.close()
    assert drained.returncode == 0 and one.returncode == 0, drained.stderr + one.stderr
    assert agent.commands == ["drain", "undrain"]
    assert agent.args == [{}, {"service": "web"}]
    assert "host drained" in drained.stdout
    assert one.stdout.strip() == "drain: nothing drained"


def test_render_drain_adds_the_note() -> None:
    text = render_drain(
        {"drain": {"host": time.time(), "services": {}}, "note": "the whole host is still drained"}
    )
    assert text.splitlines() == ["drain: host drained 0s ago", "the whole host is still drained"]
    assert render_services({"drain": {}, "services": [], "problems": []}) == "services: none defined"

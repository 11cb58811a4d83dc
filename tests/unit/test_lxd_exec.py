"""LXDApi.exec_in_instance against a stand-in LXD: the exec operation, then its wait."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from fabricd.config.model import LXDConfig
from fabricd.lxd.api import LXDApi, LXDRequestFailed


class FakeLXD(BaseHTTPRequestHandler):
    """POST /1.0/instances/<name>/exec starts an operation; its /wait answers with `outcome`."""

    outcome: ClassVar[dict[str, Any]] = {}
    seen: ClassVar[list[tuple[str, str, Any]]] = []

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.seen.append(("POST", self.path, json.loads(self.rfile.read(length))))
        if "/instances/missing/" in self.path:
            self._reply(404, {"type": "error", "error": "Instance not found", "error_code": 404})
            return
        operation = {"id": "op-1", "class": "task", "status": "Running"}
        self._reply(
            202,
            {"type": "async", "status_code": 100, "operation": "/1.0/operations/op-1", "metadata": operation},
        )

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, None))
        self._reply(200, {"type": "sync", "status_code": 200, "metadata": {"id": "op-1", **self.outcome}})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[LXDApi]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLXD)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeLXD.seen.clear()
    try:
        yield LXDApi(LXDConfig(socket=None, url=f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("code", [0, 3])
def test_the_exit_code_comes_from_the_finished_operation(api: LXDApi, code: int) -> None:
    FakeLXD.outcome = {"status": "Success", "metadata": {"return": code}}
    assert api.exec_in_instance("tenant", "web 1", ["test", "-f", "/up"], 0.5) == code
    (post, wait) = FakeLXD.seen
    assert post[1] == "/1.0/instances/web%201/exec?project=tenant"
    assert post[2]["command"] == ["test", "-f", "/up"]
    assert post[2]["wait-for-websocket"] is False and post[2]["interactive"] is False
    assert wait[1].startswith("/1.0/operations/op-1/wait?") and "timeout=1" in wait[1]


def test_a_command_still_running_is_a_timeout(api: LXDApi) -> None:
    FakeLXD.outcome = {"status": "Running", "metadata": {}}
    with pytest.raises(TimeoutError, match=r"sleep still running after 0\.5 s"):
        api.exec_in_instance("default", "web1", ["sleep", "9"], 0.5)


def test_a_failed_operation_or_a_missing_instance_is_an_error(api: LXDApi) -> None:
    FakeLXD.outcome = {"status": "Failure", "err": "executable file not found"}
    with pytest.raises(LXDRequestFailed, match="executable file not found"):
        api.exec_in_instance("default", "web1", ["nope"], 1)
    with pytest.raises(LXDRequestFailed, match="Instance not found"):
        api.exec_in_instance("default", "missing", ["true"], 1)

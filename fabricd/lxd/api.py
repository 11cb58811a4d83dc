"""A thin, blocking LXD REST client on pylxd's session: GET returning metadata, clear errors, and
conditional writes (ETag / If-Match) for compare-and-swap on LXD's replicated database.

Blocking on purpose: the observer runs it in a worker thread. Environment proxies and CA-bundle
variables are ignored (trust_env off): the LXD endpoint is always explicit in the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pylxd
import requests
from pylxd.client import get_session_for_url

from fabricd.config.model import LXDConfig

REQUEST_TIMEOUT = (3.0, 30.0)  # connect, read


class LXDUnavailable(Exception):
    """LXD did not answer: socket missing, connection refused, TLS or timeout."""


class LXDRequestFailed(Exception):
    """LXD answered with an error for one request."""

    def __init__(self, path: str, status: int, message: str, method: str = "GET") -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


class LXDPreconditionFailed(LXDRequestFailed):
    """The object changed since its ETag was read (412): someone else wrote first."""


@dataclass(frozen=True, slots=True)
class Versioned:
    """An object's metadata with the ETag LXD computed for it."""

    metadata: Any
    etag: str


def endpoint_of(config: LXDConfig) -> str:
    if config.url is not None:
        return config.url.rstrip("/")
    socket_path = str(config.socket)
    return f"http+unix://{quote(socket_path, safe='')}"


class LXDApi:
    def __init__(self, config: LXDConfig, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        self.endpoint = endpoint_of(config)
        cert = (
            (str(config.client_cert), str(config.client_key))
            if config.client_cert and config.client_key
            else None
        )
        verify: bool | str = str(config.server_cert) if config.server_cert else True
        self.session: requests.Session = get_session_for_url(self.endpoint, verify=verify, cert=cert)
        self.session.trust_env = False
        self.cert = cert

    def get(self, path: str, **params: str | int) -> Any:
        """GET /1.0<path> and return its metadata."""
        return self._request("GET", path, params=params)[0]

    def get_versioned(self, path: str, **params: str | int) -> Versioned:
        """GET /1.0<path> with its ETag, for a later conditional write."""
        metadata, response = self._request("GET", path, params=params)
        etag = response.headers.get("ETag")
        if not etag:
            raise LXDRequestFailed(path, response.status_code, "reply has no ETag")
        return Versioned(metadata, etag)

    def write(self, method: str, path: str, body: Mapping[str, Any], if_match: str, **params: str) -> None:
        """PUT or PATCH /1.0<path> only if the object still has ETag `if_match`.

        Raises LXDPreconditionFailed when another writer got there first: the caller reads again
        and decides again, so two writers can never both win.
        """
        if method not in ("PUT", "PATCH"):
            raise ValueError(f"conditional write needs PUT or PATCH, not {method}")
        self._request(method, path, params=params, json=dict(body), headers={"If-Match": if_match})

    def put(self, path: str, body: Mapping[str, Any], **params: str) -> None:
        """PUT /1.0<path> (replacing an object's config); synchronous endpoints only."""
        self._request("PUT", path, params=params, json=dict(body))

    def delete(self, path: str, **params: str) -> None:
        """DELETE /1.0<path>; synchronous endpoints only."""
        self._request("DELETE", path, params=params)

    def post(self, path: str, body: Mapping[str, Any], **params: str) -> Any:
        """POST /1.0<path> (creating an object); synchronous endpoints only."""
        return self._request("POST", path, params=params, json=dict(body))[0]

    def exec_in_instance(self, project: str, instance: str, argv: Sequence[str], timeout: float) -> int:
        """Run argv in the instance (no shell, no terminal, output discarded) and return its exit
        code. Raises TimeoutError when it has not ended within `timeout` seconds."""
        body = {
            "command": list(argv),
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": False,
            "environment": {},
        }
        path = f"/instances/{quote(instance, safe='')}/exec"
        operation, _ = self._request("POST", path, params={"project": project}, json=body, accepted=(202,))
        op_id = str((operation or {}).get("id", ""))
        if not op_id:
            raise LXDRequestFailed(path, 202, "reply names no operation", "POST")
        wait = max(1, math.ceil(timeout))  # LXD waits whole seconds; the caller bounds it tighter
        done, _ = self._request(
            "GET",
            f"/operations/{quote(op_id, safe='')}/wait",
            params={"timeout": wait, "project": project},
            timeout=(self.timeout[0], wait + 5.0),
        )
        done = done or {}
        if done.get("status") != "Success":
            if done.get("status") in ("Running", "Pending"):
                raise TimeoutError(f"{argv[0]} still running after {timeout:g} s")
            raise LXDRequestFailed(path, 200, str(done.get("err") or done.get("status")), "POST")
        code = (done.get("metadata") or {}).get("return")
        if not isinstance(code, int):
            raise LXDRequestFailed(path, 200, "operation gave no exit code", "POST")
        return code

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int],
        json: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        accepted: tuple[int, ...] = (200, 201),
        timeout: tuple[float, float] | None = None,
    ) -> tuple[Any, requests.Response]:
        url = f"{self.endpoint}/1.0{path}"
        try:
            response = self.session.request(
                method, url, params=params, json=json, headers=headers, timeout=timeout or self.timeout
            )
        except (requests.ConnectionError, requests.Timeout, OSError) as exc:
            raise LXDUnavailable(f"{self.describe()}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        status = response.status_code
        try:
            body = response.json()
        except ValueError as exc:
            raise LXDRequestFailed(path, status, "reply is not JSON", method) from exc
        if not isinstance(body, dict):
            raise LXDRequestFailed(path, status, "reply is not a JSON object", method)
        if status == 412:
            raise LXDPreconditionFailed(path, status, str(body.get("error", ""))[:200], method)
        if status not in accepted or body.get("type") == "error":
            raise LXDRequestFailed(path, status, str(body.get("error", ""))[:200], method)
        return body.get("metadata"), response

    def describe(self) -> str:
        return self.config.url or str(self.config.socket)

    def websocket_client_factory(self) -> pylxd.Client:
        """A pylxd client for the events websocket (pylxd knows the ws+unix/wss plumbing)."""
        # The endpoint, not the socket path: pylxd reads a path that does not exist (yet) as a URL
        # and fails with a misleading "No scheme supplied" instead of a connection error.
        return pylxd.Client(
            endpoint=self.endpoint, cert=self.cert, session=self.session, timeout=REQUEST_TIMEOUT
        )

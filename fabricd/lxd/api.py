"""A thin, blocking LXD REST client on pylxd's session: GET returning metadata, clear errors.

Blocking on purpose: the observer runs it in a worker thread. Environment proxies and CA-bundle
variables are ignored (trust_env off): the LXD endpoint is always explicit in the config.
"""

from __future__ import annotations

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

    def __init__(self, path: str, status: int, message: str) -> None:
        super().__init__(f"GET {path}: {status} {message}")
        self.status = status


def endpoint_of(config: LXDConfig) -> str:
    if config.url is not None:
        return config.url.rstrip("/")
    socket_path = str(config.socket)
    return f"http+unix://{quote(socket_path, safe='')}"


class LXDApi:
    def __init__(self, config: LXDConfig) -> None:
        self.config = config
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
        url = f"{self.endpoint}/1.0{path}"
        try:
            response = self.session.get(url, params=params, timeout=REQUEST_TIMEOUT)
        except (requests.ConnectionError, requests.Timeout, OSError) as exc:
            raise LXDUnavailable(f"{self.describe()}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise LXDRequestFailed(path, response.status_code, "reply is not JSON") from exc
        if not isinstance(body, dict):
            raise LXDRequestFailed(path, response.status_code, "reply is not a JSON object")
        if response.status_code != 200 or body.get("type") == "error":
            raise LXDRequestFailed(path, response.status_code, str(body.get("error", ""))[:200])
        return body.get("metadata")

    def describe(self) -> str:
        return self.config.url or str(self.config.socket)

    def websocket_client_factory(self) -> pylxd.Client:
        """A pylxd client for the events websocket (pylxd knows the ws+unix/wss plumbing)."""
        # The endpoint, not the socket path: pylxd reads a path that does not exist (yet) as a URL
        # and fails with a misleading "No scheme supplied" instead of a connection error.
        return pylxd.Client(
            endpoint=self.endpoint, cert=self.cert, session=self.session, timeout=REQUEST_TIMEOUT
        )

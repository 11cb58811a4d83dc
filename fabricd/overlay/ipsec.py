"""IPsec ESP transport protection of the VXLAN overlay: the xfrm states and policies, as `ip` argv.

Pure, except `read_key`. Every host holds the same shared key; the key and SPI of the SA for one
direction (src -> dst) are derived from it with HMAC-SHA256 over a label naming that direction and
the VNI, so both ends of a pair compute identical SAs without talking to each other. Only the
overlay's UDP port is protected: policies select `proto udp dport <port>` between the two hosts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fabricd.config.model import IPAddress

AEAD_ALGORITHM = "rfc4106(gcm(aes))"
AEAD_KEY_BYTES = 36  # a 32-byte AES-256 key followed by the 4-byte salt rfc4106 takes
ICV_BITS = 128
MIN_KEY_BYTES = 32
SPI_MIN, SPI_MAX = 0x100, 0xFFFFFFFF  # SPIs 1..255 are reserved by IANA
# fabricd's reqids live under one high byte, apart from the small ones IKE daemons hand out.
REQID_BASE = 0xFA000000
MODE = "transport"

_LABEL = "fabricd-ipsec-v1"
_KEY_FILE_MAX = 4096
_HEX = re.compile(r"(?:0x)?([0-9a-fA-F]+)")

Direction = Literal["in", "out"]


class IPsecKeyError(ValueError):
    """The key file is missing, unreadable, too open, or does not hold a usable key."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True, slots=True)
class XfrmState:
    """One SA, for the packets from `src` to `dst`. The key never shows in repr or str."""

    src: IPAddress
    dst: IPAddress
    spi: int
    reqid: int
    key: bytes

    def __repr__(self) -> str:
        return (
            f"XfrmState(src={self.src}, dst={self.dst}, spi={self.spi:#010x}, reqid={self.reqid:#x}, "
            f"key=<{len(self.key)} bytes hidden>)"
        )


@dataclass(frozen=True, slots=True)
class XfrmPolicy:
    """Require ESP for the overlay's UDP packets from `src` to `dst`; `direction` is as seen here."""

    src: IPAddress
    dst: IPAddress
    direction: Direction
    port: int
    reqid: int


@dataclass(frozen=True, slots=True)
class SkippedPeer:
    address: IPAddress
    reason: str


@dataclass(frozen=True, slots=True)
class IPsecPlan:
    """Everything sorted, so equal inputs give equal plans."""

    states: tuple[XfrmState, ...]
    policies: tuple[XfrmPolicy, ...]
    skipped: tuple[SkippedPeer, ...] = ()


# --- the key file -------------------------------------------------------------------------------


def read_key(path: Path) -> bytes:
    """The shared key: hex (64+ digits, optional 0x) or base64 of at least 32 bytes, mode 0600 or tighter."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise IPsecKeyError(path, f"cannot open the key file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IPsecKeyError(path, "expected a regular file holding the key")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise IPsecKeyError(
                path, f"is accessible by group or others (mode {mode:04o}); expected mode 0600 or tighter"
            )
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read(_KEY_FILE_MAX + 1)
    except OSError as exc:
        raise IPsecKeyError(path, f"cannot read the key file ({exc.strerror})") from None
    finally:
        os.close(fd)
    return parse_key(path, raw)


def parse_key(path: Path, raw: bytes) -> bytes:
    """The key a key file's content holds; `path` only names the file in errors."""
    expected = f"expected at least {MIN_KEY_BYTES} bytes as hex ({2 * MIN_KEY_BYTES}+ hex digits) or base64"
    if len(raw) > _KEY_FILE_MAX:
        raise IPsecKeyError(path, f"is larger than {_KEY_FILE_MAX} bytes; {expected}")
    try:
        text = "".join(raw.decode("ascii").split())  # base64 may be wrapped over several lines
    except UnicodeDecodeError:
        raise IPsecKeyError(path, f"is not ASCII text; {expected}") from None
    if not text:
        raise IPsecKeyError(path, f"is empty; {expected}")
    hex_match = _HEX.fullmatch(text)
    if hex_match:
        # Hex is tried first: all-hex text is far likelier meant as hex than as base64.
        digits = hex_match[1]
        if len(digits) < 2 * MIN_KEY_BYTES or len(digits) % 2:
            raise IPsecKeyError(path, f"holds {len(digits)} hex digits; {expected}")
        return bytes.fromhex(digits)
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise IPsecKeyError(path, f"is neither hex nor valid base64; {expected}") from None
    if len(key) < MIN_KEY_BYTES:
        raise IPsecKeyError(path, f"holds {len(key)} bytes of base64; {expected}")
    return key


# --- the plan -----------------------------------------------------------------------------------


def plan_ipsec(local: IPAddress, peers: Sequence[IPAddress], key: bytes, port: int, vni: int) -> IPsecPlan:
    """Two SAs and two policies (out and in) per peer of `local`'s family."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the IPsec key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    if not 1 <= vni <= 2**24 - 1:
        raise ValueError(f"vni must be 1..16777215, got {vni}")
    reqid = REQID_BASE | vni
    states: list[XfrmState] = []
    policies: list[XfrmPolicy] = []
    skipped: list[SkippedPeer] = []
    for peer in sorted(set(peers), key=_address_order):
        if peer.version != local.version:
            reason = f"IPv{peer.version} peer, but the local address {local} is IPv{local.version}"
            skipped.append(SkippedPeer(peer, reason))
            continue
        if peer == local:
            skipped.append(SkippedPeer(peer, "the local address itself"))
            continue
        for src, dst in ((local, peer), (peer, local)):
            spi = derive_spi(key, src, dst, vni)
            states.append(XfrmState(src, dst, spi, reqid, _sa_key(key, src, dst, vni)))
        policies.append(XfrmPolicy(local, peer, "out", port, reqid))
        policies.append(XfrmPolicy(peer, local, "in", port, reqid))
    states.sort(key=lambda s: (_address_order(s.src), _address_order(s.dst)))
    policies.sort(key=lambda p: (p.direction, _address_order(p.src), _address_order(p.dst)))
    return IPsecPlan(tuple(states), tuple(policies), tuple(skipped))


def derive_spi(key: bytes, src: IPAddress, dst: IPAddress, vni: int) -> int:
    """The SPI of the SA src -> dst, never equal to that of dst -> src.

    The direction whose source sorts first keeps its first candidate; the other takes its first
    candidate that differs, so both ends settle on the same pair without coordinating.
    """
    if _address_order(src) < _address_order(dst):
        return _spi_candidate(key, src, dst, vni, 0)
    taken = _spi_candidate(key, dst, src, vni, 0)
    attempt = 0
    while (spi := _spi_candidate(key, src, dst, vni, attempt)) == taken:
        attempt += 1
    return spi


def _spi_candidate(key: bytes, src: IPAddress, dst: IPAddress, vni: int, attempt: int) -> int:
    number = int.from_bytes(_derive(key, f"spi/{attempt}", src, dst, vni, 8), "big")
    return SPI_MIN + number % (SPI_MAX - SPI_MIN + 1)


def _sa_key(key: bytes, src: IPAddress, dst: IPAddress, vni: int) -> bytes:
    return _derive(key, "aead-key", src, dst, vni, AEAD_KEY_BYTES)


def _derive(key: bytes, purpose: str, src: IPAddress, dst: IPAddress, vni: int, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with HMAC-SHA256, the shared key as PRK and the label as info."""
    info = f"{_LABEL}|{purpose}|vni={vni}|src={src}|dst={dst}".encode()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(key, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _address_order(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


# --- iproute2 argv ------------------------------------------------------------------------------


def state_argv(state: XfrmState) -> list[str]:
    """`ip xfrm state add`; the argv holds the key, so show it only through `redacted`."""
    return [
        *_state_id(state, "add"),
        "reqid", str(state.reqid), "mode", MODE,
        "aead", AEAD_ALGORITHM, "0x" + state.key.hex(), str(ICV_BITS),
    ]  # fmt: skip


def state_delete_argv(state: XfrmState) -> list[str]:
    return _state_id(state, "delete")


def policy_argv(policy: XfrmPolicy) -> list[str]:
    return [
        *_policy_id(policy, "add"),
        "tmpl", "src", str(policy.src), "dst", str(policy.dst),
        "proto", "esp", "reqid", str(policy.reqid), "mode", MODE,
    ]  # fmt: skip


def policy_delete_argv(policy: XfrmPolicy) -> list[str]:
    return _policy_id(policy, "delete")


def redacted(argv: Sequence[str]) -> list[str]:
    """The argv with the AEAD key replaced, fit for logs and error messages."""
    shown = list(argv)
    for i, arg in enumerate(shown[:-2]):
        if arg == "aead":
            shown[i + 2] = "<key hidden>"
    return shown


def _state_id(state: XfrmState, verb: str) -> list[str]:
    return [
        "ip", "xfrm", "state", verb, "src", str(state.src), "dst", str(state.dst),
        "proto", "esp", "spi", f"{state.spi:#010x}",
    ]  # fmt: skip


def _policy_id(policy: XfrmPolicy, verb: str) -> list[str]:
    bits = policy.src.max_prefixlen
    return [
        "ip", "xfrm", "policy", verb, "src", f"{policy.src}/{bits}", "dst", f"{policy.dst}/{bits}",
        "proto", "udp", "dport", str(policy.port), "dir", policy.direction,
    ]  # fmt: skip

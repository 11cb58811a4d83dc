"""IPsec for the overlay: SA derivation both ends agree on, key files, argv, and all-or-nothing apply."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config.model import IPAddress
from fabricd.overlay import ipsec
from fabricd.overlay.ipsec import (
    AEAD_ALGORITHM,
    AEAD_KEY_BYTES,
    ICV_BITS,
    REQID_BASE,
    SPI_MAX,
    SPI_MIN,
    IPsecKeyError,
    IPsecPlan,
    SkippedPeer,
    XfrmPolicy,
    XfrmState,
    derive_spi,
    parse_key,
    plan_ipsec,
    policy_argv,
    policy_delete_argv,
    read_key,
    redacted,
    state_argv,
    state_delete_argv,
)
from fabricd.overlay.ipsec_apply import IPsecError, IPsecUnavailable, apply_ipsec, remove_ipsec

FAST = settings(max_examples=60, deadline=None)

A, B, C = IPv4Address("192.0.2.11"), IPv4Address("192.0.2.12"), IPv4Address("192.0.2.13")
A6, B6 = IPv6Address("2001:db8::11"), IPv6Address("2001:db8::12")
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PORT, VNI = 4789, 100

keys = st.binary(min_size=32, max_size=64)
v4 = st.integers(1, 2**32 - 2).map(IPv4Address)
v6 = st.integers(1, 2**128 - 1).map(IPv6Address)


def state(plan: IPsecPlan, src: IPAddress, dst: IPAddress) -> XfrmState:
    (found,) = [s for s in plan.states if (s.src, s.dst) == (src, dst)]
    return found


# --- the plan ----------------------------------------------------------------------------------


def test_plan_shape_for_one_peer() -> None:
    plan = plan_ipsec(A, [B], KEY, PORT, VNI)
    assert [(s.src, s.dst) for s in plan.states] == [(A, B), (B, A)]
    assert plan.policies == (
        XfrmPolicy(B, A, "in", PORT, REQID_BASE | VNI),
        XfrmPolicy(A, B, "out", PORT, REQID_BASE | VNI),
    )
    assert plan.skipped == ()
    for s in plan.states:
        assert s.reqid == REQID_BASE | VNI
        assert len(s.key) == AEAD_KEY_BYTES
        assert SPI_MIN <= s.spi <= SPI_MAX


def test_plan_is_deterministic_and_sorted() -> None:
    first = plan_ipsec(A, [C, B, C], KEY, PORT, VNI)
    assert first == plan_ipsec(A, [B, C], KEY, PORT, VNI)
    assert [(s.src, s.dst) for s in first.states] == [(A, B), (A, C), (B, A), (C, A)]
    assert [(p.direction, p.src, p.dst) for p in first.policies] == [
        ("in", B, A),
        ("in", C, A),
        ("out", A, B),
        ("out", A, C),
    ]


@FAST
@given(keys, st.lists(v4, min_size=2, max_size=2, unique=True), st.integers(1, 2**24 - 1))
def test_both_ends_derive_the_same_sa_for_a_direction(key: bytes, pair: list[IPAddress], vni: int) -> None:
    a, b = pair
    from_a, from_b = plan_ipsec(a, [b], key, PORT, vni), plan_ipsec(b, [a], key, PORT, vni)
    assert state(from_a, a, b) == state(from_b, a, b)
    assert state(from_a, b, a) == state(from_b, b, a)
    assert set(from_a.states) == set(from_b.states)


@FAST
@given(keys, st.lists(st.one_of(v4, v6), min_size=2, max_size=2, unique=True))
def test_directions_differ_in_spi_and_key(key: bytes, pair: list[IPAddress]) -> None:
    a, b = pair
    if a.version != b.version:
        return
    plan = plan_ipsec(a, [b], key, PORT, VNI)
    there, back = state(plan, a, b), state(plan, b, a)
    assert there.spi != back.spi
    assert there.key != back.key


def test_keys_and_spis_depend_on_key_and_vni() -> None:
    base = state(plan_ipsec(A, [B], KEY, PORT, VNI), A, B)
    other_key = state(plan_ipsec(A, [B], OTHER_KEY, PORT, VNI), A, B)
    other_vni = state(plan_ipsec(A, [B], KEY, PORT, VNI + 1), A, B)
    assert len({base.key, other_key.key, other_vni.key}) == 3
    assert len({base.spi, other_key.spi, other_vni.spi}) == 3


def test_colliding_spi_candidates_are_resolved_the_same_way_on_both_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every direction's first candidate is the same SPI: the later-sorting direction moves on.
    def candidate(key: bytes, src: IPAddress, dst: IPAddress, vni: int, attempt: int) -> int:
        return 0x1000 + attempt

    monkeypatch.setattr(ipsec, "_spi_candidate", candidate)
    assert derive_spi(KEY, A, B, VNI) == 0x1000
    assert derive_spi(KEY, B, A, VNI) == 0x1001
    assert plan_ipsec(A, [B], KEY, PORT, VNI).states == plan_ipsec(B, [A], KEY, PORT, VNI).states


def test_ipv6_plan() -> None:
    plan = plan_ipsec(A6, [B6], KEY, PORT, VNI)
    assert [(s.src, s.dst) for s in plan.states] == [(A6, B6), (B6, A6)]
    out = next(p for p in plan.policies if p.direction == "out")
    assert policy_argv(out)[4:8] == ["src", "2001:db8::11/128", "dst", "2001:db8::12/128"]


def test_other_family_peers_and_self_are_skipped() -> None:
    plan = plan_ipsec(A, [B6, B, A], KEY, PORT, VNI)
    assert {(s.src, s.dst) for s in plan.states} == {(A, B), (B, A)}
    assert plan.skipped == (
        SkippedPeer(A, "the local address itself"),
        SkippedPeer(B6, "IPv6 peer, but the local address 192.0.2.11 is IPv4"),
    )
    assert plan_ipsec(A6, [A], KEY, PORT, VNI).skipped[0].reason.startswith("IPv4 peer")
    assert plan_ipsec(A6, [A], KEY, PORT, VNI).states == ()


@pytest.mark.parametrize(
    ("key", "port", "vni", "message"),
    [
        (bytes(31), PORT, VNI, "at least 32 bytes"),
        (KEY, 0, VNI, "port must be"),
        (KEY, PORT, 0, "vni must be"),
        (KEY, PORT, 2**24, "vni must be"),
    ],
)
def test_bad_plan_inputs(key: bytes, port: int, vni: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_ipsec(A, [B], key, port, vni)


# --- argv and repr -----------------------------------------------------------------------------


def test_state_and_policy_argv() -> None:
    plan = plan_ipsec(A, [B], KEY, PORT, VNI)
    out_state = state(plan, A, B)
    spi = f"{out_state.spi:#010x}"
    assert state_argv(out_state) == [
        "ip", "xfrm", "state", "add", "src", "192.0.2.11", "dst", "192.0.2.12", "proto", "esp",
        "spi", spi, "reqid", str(REQID_BASE | VNI), "mode", "transport",
        "aead", AEAD_ALGORITHM, "0x" + out_state.key.hex(), str(ICV_BITS),
    ]  # fmt: skip
    assert state_delete_argv(out_state) == [
        "ip", "xfrm", "state", "delete", "src", "192.0.2.11", "dst", "192.0.2.12", "proto", "esp", "spi", spi,
    ]  # fmt: skip
    in_policy = plan.policies[0]
    assert policy_argv(in_policy) == [
        "ip", "xfrm", "policy", "add", "src", "192.0.2.12/32", "dst", "192.0.2.11/32",
        "proto", "udp", "dport", "4789", "dir", "in",
        "tmpl", "src", "192.0.2.12", "dst", "192.0.2.11", "proto", "esp",
        "reqid", str(REQID_BASE | VNI), "mode", "transport",
    ]  # fmt: skip
    add = policy_argv(in_policy)
    assert policy_delete_argv(in_policy) == [*add[:3], "delete", *add[4:14]]


@FAST
@given(keys, st.lists(st.one_of(v4, v6), min_size=2, max_size=4, unique=True))
def test_argv_is_never_a_shell_string_and_repr_hides_keys(key: bytes, addresses: list[IPAddress]) -> None:
    plan = plan_ipsec(addresses[0], addresses[1:], key, PORT, VNI)
    argvs = [state_argv(s) for s in plan.states] + [state_delete_argv(s) for s in plan.states]
    argvs += [policy_argv(p) for p in plan.policies] + [policy_delete_argv(p) for p in plan.policies]
    for argv in argvs:
        assert isinstance(argv, list) and argv[0] == "ip"
        assert all(isinstance(arg, str) and arg and " " not in arg for arg in argv)
    shown = repr(plan) + str(plan) + "".join(map(repr, plan.states)) + str(plan.states)
    for s in plan.states:
        assert s.key.hex() not in shown and s.key.hex().upper() not in shown
        assert s.key.hex() not in " ".join(redacted(state_argv(s)))
        assert "<36 bytes hidden>" in repr(s)
    assert key.hex() not in shown


def test_redacted_only_hides_the_key() -> None:
    s = state(plan_ipsec(A, [B], KEY, PORT, VNI), A, B)
    argv = state_argv(s)
    assert redacted(argv) == [*argv[:-2], "<key hidden>", argv[-1]]
    assert argv[-2].startswith("0x")  # the original is untouched
    policy = plan_ipsec(A, [B], KEY, PORT, VNI).policies[0]
    assert redacted(policy_argv(policy)) == policy_argv(policy)


# --- the key file ------------------------------------------------------------------------------


def key_file(tmp_path: Path, content: bytes | str, mode: int = 0o600) -> Path:
    path = tmp_path / "overlay.key"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)
    return path


@FAST
@given(st.binary(min_size=32, max_size=128), st.sampled_from(["", "0x"]), st.sampled_from(["", "\n"]))
def test_hex_key_file(tmp_path_factory: pytest.TempPathFactory, key: bytes, prefix: str, end: str) -> None:
    path = key_file(tmp_path_factory.mktemp("k"), prefix + key.hex() + end)
    assert read_key(path) == key
    assert parse_key(path, (prefix + key.hex().upper()).encode()) == key


@FAST
@given(st.binary(min_size=32, max_size=128))
def test_base64_key_file(tmp_path_factory: pytest.TempPathFactory, key: bytes) -> None:
    encoded = base64.encodebytes(key).decode()  # wrapped at 76 columns, as base64(1) does
    path = key_file(tmp_path_factory.mktemp("k"), encoded)
    expected = bytes.fromhex(encoded.strip()) if _all_hex(encoded.strip()) else key
    assert read_key(path) == expected


def _all_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


@FAST
@given(st.binary(min_size=1, max_size=31))
def test_short_keys_are_refused(key: bytes) -> None:
    path = Path("/etc/fabricd/k")
    for content in (key.hex(), base64.b64encode(key).decode()):
        if _all_hex(content) and len(content) >= 64:
            continue  # base64 that happens to be long enough hex: a valid hex key
        with pytest.raises(IPsecKeyError, match="expected at least 32 bytes") as info:
            parse_key(path, content.encode())
        assert info.value.path == path
        assert str(info.value).startswith("/etc/fabricd/k: ")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b" \n", "is empty"),
        (b"ab" * 31, "holds 62 hex digits"),
        (b"a" * 65, "holds 65 hex digits"),
        (b"not a key at all!", "neither hex nor valid base64"),
        ("é".encode() * 40, "is not ASCII text"),
        (b"A" * 5000, "larger than 4096 bytes"),
    ],
)
def test_bad_key_content(tmp_path: Path, content: bytes, problem: str) -> None:
    with pytest.raises(IPsecKeyError, match=problem):
        read_key(key_file(tmp_path, content))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610, 0o601])
def test_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, KEY.hex(), mode)
    with pytest.raises(IPsecKeyError, match=f"accessible by group or others \\(mode 0{mode:o}\\)") as info:
        read_key(path)
    assert str(path) in str(info.value) and "0600" in str(info.value)
    assert KEY.hex() not in str(info.value)


def test_key_file_0400_is_fine(tmp_path: Path) -> None:
    assert read_key(key_file(tmp_path, KEY.hex(), 0o400)) == KEY


def test_missing_key_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(IPsecKeyError, match="cannot open the key file") as info:
        read_key(tmp_path / "absent.key")
    assert isinstance(info.value, ValueError)
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    with pytest.raises(IPsecKeyError, match="regular file"):
        read_key(directory)


# --- apply and remove, with a recorded runner ---------------------------------------------------


class FakeIp:
    """Records argv; fails the first command matching `fail_on` with `stderr`."""

    def __init__(self, fail_on: str | None = None, stderr: str = "", gone: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.stderr = stderr
        self.gone = gone

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        joined = " ".join(argv)
        if self.fail_on is not None and self.fail_on in joined:
            self.fail_on = None
            return subprocess.CompletedProcess(argv, 2, "", self.stderr)
        if self.gone and " delete " in joined:
            return subprocess.CompletedProcess(argv, 2, "", "RTNETLINK answers: No such process\n")
        return subprocess.CompletedProcess(argv, 0, "", "")


PLAN = plan_ipsec(A, [B, C], KEY, PORT, VNI)


def test_apply_adds_states_then_policies() -> None:
    ip = FakeIp()
    apply_ipsec(PLAN, run=ip)
    assert ip.calls == [state_argv(s) for s in PLAN.states] + [policy_argv(p) for p in PLAN.policies]


def test_apply_in_a_namespace() -> None:
    ip = FakeIp()
    apply_ipsec(PLAN, run=ip, netns="fabtest-x")
    assert all(call[:4] == ["ip", "-n", "fabtest-x", "xfrm"] for call in ip.calls)
    assert ip.calls[0][3:] == state_argv(PLAN.states[0])[1:]


def test_failure_removes_what_was_added_in_reverse_and_names_the_command() -> None:
    failing = policy_argv(PLAN.policies[1])
    ip = FakeIp(fail_on=" ".join(failing[1:]), stderr="RTNETLINK answers: File exists\n")
    with pytest.raises(IPsecUnavailable) as info:
        apply_ipsec(PLAN, run=ip)
    added = [state_argv(s) for s in PLAN.states] + [policy_argv(PLAN.policies[0])]
    undone = [state_delete_argv(s) for s in PLAN.states] + [policy_delete_argv(PLAN.policies[0])]
    assert ip.calls == [*added, failing, *reversed(undone)]
    error = info.value
    assert " ".join(failing) in str(error) and "File exists" in str(error)
    assert "ESP" not in str(error) and not error.lacks_esp
    assert "the 5 entries added before were removed again" in str(error)
    assert error.leftovers == 0


@pytest.mark.parametrize(
    "stderr",
    [
        "Error: Requested type not found.",
        "Error: Requested AEAD algorithm not found.",
        "RTNETLINK answers: Protocol not supported",
    ],
)
def test_kernel_without_esp(stderr: str) -> None:
    ip = FakeIp(fail_on="state add", stderr=stderr)
    with pytest.raises(IPsecUnavailable, match="the kernel lacks ESP") as info:
        apply_ipsec(PLAN, run=ip, netns="fabtest-x")
    assert len(ip.calls) == 1  # the first state failed: nothing to undo
    message = str(info.value)
    assert message.endswith("; nothing had been added")
    assert stderr in message and "esp4/esp6" in message and "ip -n fabtest-x xfrm state add" in message
    assert info.value.lacks_esp
    for s in PLAN.states:
        assert s.key.hex() not in message and s.key.hex() not in info.value.command
    assert "<key hidden>" in info.value.command


def test_a_key_echoed_by_ip_is_hidden() -> None:
    key_hex = "0x" + PLAN.states[0].key.hex()
    ip = FakeIp(fail_on="state add", stderr=f'Error: argument "{key_hex}" is wrong: invalid value')
    with pytest.raises(IPsecUnavailable) as info:
        apply_ipsec(PLAN, run=ip)
    assert key_hex not in str(info.value) and key_hex not in info.value.stderr
    assert 'argument "<key hidden>" is wrong' in str(info.value)


def test_failed_rollback_is_reported() -> None:
    calls: list[list[str]] = []

    def ip(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        ok = "add" in argv and "policy" not in argv
        return subprocess.CompletedProcess(argv, 0 if ok else 2, "", "" if ok else "Operation not permitted")

    with pytest.raises(IPsecUnavailable, match="rollback left 4 of 4 added entries installed") as info:
        apply_ipsec(PLAN, run=ip)
    assert info.value.leftovers == 4


def test_missing_ip_binary_is_a_failure_too() -> None:
    def ip(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", "ip")

    with pytest.raises(IPsecUnavailable, match="No such file or directory"):
        apply_ipsec(PLAN, run=ip)


def test_remove_deletes_policies_then_states_and_ignores_missing_ones() -> None:
    ip = FakeIp(gone=True)
    remove_ipsec(PLAN, run=ip, netns="ns1")
    expected = [policy_delete_argv(p) for p in PLAN.policies] + [state_delete_argv(s) for s in PLAN.states]
    assert ip.calls == [["ip", "-n", "ns1", *argv[1:]] for argv in expected]


def test_remove_reports_other_errors() -> None:
    ip = FakeIp(fail_on="policy delete", stderr="Operation not permitted")
    with pytest.raises(IPsecError, match="Operation not permitted"):
        remove_ipsec(PLAN, run=ip)
    assert len(ip.calls) == len(PLAN.policies) + len(PLAN.states)  # it went on with the rest


def test_empty_plan_runs_nothing() -> None:
    ip = FakeIp()
    empty = replace(PLAN, states=(), policies=())
    apply_ipsec(empty, run=ip)
    remove_ipsec(empty, run=ip)
    assert ip.calls == []

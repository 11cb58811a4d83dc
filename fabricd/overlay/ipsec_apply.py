"""Install an IPsec plan with `ip xfrm`: states first, then policies, and never half of it.

States go in first so a policy never requires ESP before its SAs exist (which would drop the
overlay's traffic). On the first failure everything this call added is deleted again, newest first.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence

from fabricd.log import get_logger
from fabricd.overlay.ipsec import (
    AEAD_ALGORITHM,
    IPsecPlan,
    policy_argv,
    policy_delete_argv,
    redacted,
    state_argv,
    state_delete_argv,
)

log = get_logger("overlay.ipsec")

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]

_TIMEOUT = 10.0
# What iproute2 prints when the kernel has no ESP (xfrm_type) or no AES-GCM AEAD.
_NO_ESP = ("requested type not found", "requested aead algorithm not found", "protocol not supported")


class IPsecError(RuntimeError):
    """An `ip xfrm` command failed."""


class IPsecUnavailable(IPsecError):
    """The plan could not be applied; nothing of it was left installed (unless `leftovers` says so)."""

    def __init__(self, message: str, command: str, stderr: str, lacks_esp: bool, leftovers: int) -> None:
        super().__init__(message)
        self.command = command  # with the key hidden
        self.stderr = stderr
        self.lacks_esp = lacks_esp
        self.leftovers = leftovers  # entries the rollback could not delete


def run_ip(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=_TIMEOUT)


def apply_ipsec(plan: IPsecPlan, run: Runner = run_ip, netns: str | None = None) -> None:
    """Add every state, then every policy; on failure delete what was added and raise IPsecUnavailable."""
    steps = [(state_argv(s), state_delete_argv(s)) for s in plan.states]
    steps += [(policy_argv(p), policy_delete_argv(p)) for p in plan.policies]
    undo: list[list[str]] = []
    for add, delete in steps:
        error = _attempt(run, _in_netns(add, netns))
        if error is not None:
            leftovers = _roll_back(run, reversed(undo))
            raise _unavailable(_in_netns(add, netns), error, len(undo), leftovers)
        undo.append(_in_netns(delete, netns))
    log.info("ipsec applied", states=len(plan.states), policies=len(plan.policies), netns=netns)


def remove_ipsec(plan: IPsecPlan, run: Runner = run_ip, netns: str | None = None) -> None:
    """Delete the plan's policies, then its states; entries already gone are fine."""
    deletes = [policy_delete_argv(p) for p in plan.policies] + [state_delete_argv(s) for s in plan.states]
    failures = []
    for argv in deletes:
        error = _attempt(run, _in_netns(argv, netns))
        if error is not None and not _already_gone(error):
            failures.append(f"{' '.join(_in_netns(argv, netns))}: {error}")
    if failures:
        raise IPsecError("could not remove IPsec entries: " + "; ".join(failures))
    log.info("ipsec removed", states=len(plan.states), policies=len(plan.policies), netns=netns)


def _attempt(run: Runner, argv: list[str]) -> str | None:
    """None on success, else the error text (the kernel's stderr)."""
    try:
        result = run(argv)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    return (result.stderr or "").strip() or f"exit status {result.returncode}"


def _roll_back(run: Runner, deletes: Iterable[list[str]]) -> int:
    """Delete what was added; returns how many could not be deleted."""
    leftovers = 0
    for argv in deletes:
        error = _attempt(run, argv)
        if error is not None and not _already_gone(error):
            leftovers += 1
            log.error("ipsec rollback failed", command=" ".join(argv), error=error)
    return leftovers


def _unavailable(argv: list[str], stderr: str, added: int, leftovers: int) -> IPsecUnavailable:
    shown = redacted(argv)
    command = " ".join(shown)
    for arg, hidden in zip(argv, shown, strict=True):
        if arg != hidden:  # iproute2 quotes an argument it cannot parse; never let that be the key
            stderr = stderr.replace(arg, hidden)
    lacks_esp = any(marker in stderr.lower() for marker in _NO_ESP)
    message = f"IPsec could not be applied: `{command}` failed: {stderr}"
    if lacks_esp:
        message += f" (the kernel lacks ESP: load modules esp4/esp6, and gcm/aes for {AEAD_ALGORITHM})"
    if leftovers:
        message += f"; rollback left {leftovers} of {added} added entries installed"
    elif added:
        message += f"; the {added} entries added before were removed again"
    else:
        message += "; nothing had been added"
    log.error("ipsec apply failed", command=command, error=stderr, rolled_back=added - leftovers)
    return IPsecUnavailable(message, command, stderr, lacks_esp, leftovers)


def _already_gone(error: str) -> bool:
    # iproute2: "No such file or directory" (policy) or "No such process" (state).
    return "No such" in error


def _in_netns(argv: list[str], netns: str | None) -> list[str]:
    if netns is None:
        return argv
    return [argv[0], "-n", netns, *argv[1:]]

"""Run a function in a network namespace of its own: a forked child unshares one, so the
machine's interfaces are never touched, and reports the repr of what the function returned."""

from __future__ import annotations

import ctypes
import os
import traceback
from collections.abc import Callable

CLONE_NEWNET = 0x40000000


def unshare_netns() -> None:
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


def repr_in_own_netns(steps: Callable[[], object]) -> str:
    """repr(steps()) run in a forked child after unshare; fails with the child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            unshare_netns()
            os.write(write_end, repr(steps()).encode())
            code = 0
        except BaseException:  # the parent shows why
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as out:
        text = out.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text

"""BIRD 2 as fabricd's supervised BFD daemon: its file, its control socket, `birdc` in threads.

BIRD runs in the foreground (`bird -f`) as a `SupervisedChild`: it dies with fabricd, is restarted
with backoff, and reads the current file at every start. A changed file is loaded into the running
BIRD with `birdc configure` (sessions that stay are not touched); a file BIRD refuses leaves the old
one running and fails the applying step, which is retried. Every `birdc` call is a subprocess run
in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from fabricd.authority.dnsmasq import find_program
from fabricd.bfd.sessions import BFDObservation, parse_show_bfd_sessions
from fabricd.bgp.supervisor import MAX_UNIX_PATH
from fabricd.log import get_logger
from fabricd.process import SupervisedChild

log = get_logger("fabricd.bfd")

BIRDC_TIMEOUT = 5.0
# What `birdc configure` answers when the new file was taken (0003, or 0004 while one is running).
_CONFIGURED = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")


class BirdError(RuntimeError):
    """birdc could not do what was asked; the message carries BIRD's own words."""


class BirdBFD:
    def __init__(self, state_dir: Path, bird: Path | None = None) -> None:
        self.state_dir = state_dir
        self.config_file = state_dir / "bird.conf"
        self.socket_path = state_dir / "bird.ctl"
        if len(str(self.socket_path).encode()) > MAX_UNIX_PATH:
            raise ValueError(
                f"BIRD control socket path {self.socket_path} is longer than {MAX_UNIX_PATH} bytes"
            )
        self.bird = str(bird) if bird is not None else find_program("bird")
        # birdc comes with bird: next to a configured bird, else wherever bird is found.
        self.birdc = str(bird.with_name("birdc")) if bird is not None else find_program("birdc")
        self.child = SupervisedChild(
            "bird",
            [self.bird, "-f", "-c", str(self.config_file), "-s", str(self.socket_path)],
            dict(os.environ),
            state_dir / "bird.out",
        )
        self.written: str | None = None  # the file as it is now
        self.loaded: str | None = None  # the file as the running BIRD read it, when known
        self.configures = 0

    @property
    def pid(self) -> int | None:
        return self.child.pid

    async def start(self, text: str) -> None:
        await asyncio.to_thread(self._write, text)
        self.loaded = text  # read by every BIRD started from now on
        self.child.start()

    async def stop(self) -> None:
        await self.child.stop()
        self.socket_path.unlink(missing_ok=True)

    def dead(self) -> str | None:
        return self.child.dead()

    async def apply(self, text: str) -> bool:
        """Make BIRD run `text`; True when it had to be told (the file changed)."""
        if text == self.written and text == self.loaded:
            return False
        if text != self.written:
            await asyncio.to_thread(self._write, text)
        pid = self.child.pid
        if pid is None:
            self.loaded = text  # the next start reads the new file
            return True
        await asyncio.to_thread(self._configure)
        self.loaded = text
        self.configures += 1
        log.info("bird reconfigured", pid=pid, file=str(self.config_file))
        return True

    async def sessions(self) -> BFDObservation:
        return await asyncio.to_thread(self.read_sessions)

    def read_sessions(self) -> BFDObservation:
        try:
            out = self._birdc(["show", "bfd", "sessions"])
        except BirdError as exc:
            return BFDObservation(error=str(exc))
        return BFDObservation(parse_show_bfd_sessions(out))

    def _write(self, text: str) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.config_file.with_name(self.config_file.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_file)
        self.written = text

    def _configure(self) -> None:
        try:
            out = self._birdc(["configure"])
        except BirdError as exc:  # birdc exits 1 on a file BIRD refuses
            raise BirdError(f"bird refused {self.config_file}: {exc}") from None
        if not any(word in out for word in _CONFIGURED):
            raise BirdError(f"bird refused {self.config_file}: {' '.join(out.split())[:300]}")

    def _birdc(self, command: Sequence[str]) -> str:
        argv = [self.birdc, "-s", str(self.socket_path), *command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=BIRDC_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BirdError(f"{' '.join(argv)}: {exc}") from None
        if done.returncode != 0:
            said = " ".join((done.stdout + done.stderr).split())[:300]
            raise BirdError(f"{' '.join(argv)} exited with {done.returncode}: {said}")
        return done.stdout

"""Config problems, each pointing at a file, a key path and (where YAML gives one) a line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    key_path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key_path or '<top level>'}: {self.message}"


class ConfigError(Exception):
    """The config is invalid; nothing from it may be applied."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__(self.problems)  # args stay (problems,) so the error pickles

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)

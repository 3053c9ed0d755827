"""What every job script starts with: `mpi_ray` importable from a plain checkout (ray job submit
--working-dir .), plain logs where nobody reads colours, and one way to refuse a bad config or
argument before any Ray work."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class _PlainText:
    """A text stream that drops colour sequences: Ray's log deduplication colours "[repeated Nx across
    cluster]" whatever the output is."""

    COLOUR = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(self.COLOUR.sub("", text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# Ray wraps every worker line's "(pid=...)" prefix in ANSI colour codes; in a file, a CI log or
# `ray job logs` they are noise. A terminal keeps them (and a user's own RAY_COLOR_PREFIX wins).
if not sys.stdout.isatty():
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    sys.stdout, sys.stderr = _PlainText(sys.stdout), _PlainText(sys.stderr)

if TYPE_CHECKING:
    from mpi_ray.config.schema import PipelineConfig

EXIT_CONFIG = 2  # a bad config or argument: nothing was started


def refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def config_or_exit(path: str | None, overrides: list[str]) -> PipelineConfig:
    from mpi_ray.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        refuse(str(exc))

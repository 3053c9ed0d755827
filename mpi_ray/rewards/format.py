"""Format reward: 1.0 when the whole response matches the think-then-box pattern (reference §4.6,
`RewardConfig.format_pattern`, full match, dot matches newline), else 0.0.

Model output is hostile input, and the default pattern `<think>.*</think>.*\\boxed\\{.*\\}.*` makes
Python's backtracking `re` take cubic time on text such as "<think>" + "</think>\\boxed{" * 4000
(about a minute at 60K characters). So:
- text over MAX_CHARS, bytes that are not UTF-8, and anything that is not text score 0;
- a pattern that is only literals joined by `.*` (the default is) is matched in one linear pass:
  each literal at its earliest place after the previous one, which is exactly what a full match
  needs, since `.*` with DOTALL matches anything between them;
- any other pattern goes to the `regex` engine with a time limit; running out of time scores 0.
"""

from __future__ import annotations

import functools

import regex

from mpi_ray.config.schema import RewardConfig

MAX_CHARS = 65_536
FALLBACK_TIMEOUT_S = 1.0
DEFAULT_PATTERN = RewardConfig().format_pattern
_METACHARACTERS = frozenset(".^$*+?{}[]\\|()")


def response_text(response: object) -> str | None:
    """A model response as text, or None when it is not (decodable) text or is over MAX_CHARS."""
    if isinstance(response, (bytes, bytearray)):
        if len(response) > 4 * MAX_CHARS:
            return None
        try:
            response = bytes(response).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(response, str) or len(response) > MAX_CHARS:
        return None
    return response


@functools.lru_cache(maxsize=16)
def literal_chain(pattern: str) -> tuple[str, ...] | None:
    """The literals of a pattern made only of literals joined by `.*` ("" where the pattern starts
    or ends with `.*`), or None for any other pattern."""
    pieces, current, i = [], [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not escaped or escaped.isalnum() or escaped == "_":  # \d, \b, \1 ... are not literals
                return None
            current.append(escaped)
            i += 2
        elif pattern.startswith(".*", i):
            pieces.append("".join(current))
            current = []
            i += 2
        elif char in _METACHARACTERS:
            return None
        else:
            current.append(char)
            i += 1
    pieces.append("".join(current))
    return tuple(pieces) if len(pieces) > 1 else None


def _matches_chain(text: str, pieces: tuple[str, ...]) -> bool:
    """Full match of pieces[0] .* pieces[1] .* ... .* pieces[-1] (DOTALL), in linear time."""
    first, *middle, last = pieces
    if not text.startswith(first):
        return False
    position = len(first)
    for piece in middle:
        found = text.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    return len(text) - len(last) >= position and text.endswith(last)


@functools.lru_cache(maxsize=16)
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern, regex.DOTALL)


def format_reward(response: object, pattern: str = DEFAULT_PATTERN) -> float:
    """1.0 if the whole response matches `pattern` (DOTALL), else 0.0; never raises on a response."""
    text = response_text(response)
    if text is None:
        return 0.0
    pieces = literal_chain(pattern)
    if pieces is not None:
        return float(_matches_chain(text, pieces))
    try:
        return float(_compiled(pattern).fullmatch(text, timeout=FALLBACK_TIMEOUT_S) is not None)
    except TimeoutError:
        return 0.0

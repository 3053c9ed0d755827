"""The answer inside the last \\boxed{...} of a model response (shared by every reward).

One left-to-right pass with a stack of open braces, so the cost is linear in the input whatever it
holds; input past `max_chars` is refused outright. A backslash escapes the next character, so LaTeX
`\\{` `\\}` and JSON `\\\\` do not count as braces. Of the balanced boxes, the one that starts last wins
(for `\\boxed{\\boxed{x}}` that is "x"). Returns None when there is no balanced box.
"""

from __future__ import annotations

import re

BOXED = "\\boxed{"
MAX_CHARS = 65_536
# The only tokens that matter, found by the regex engine: a box opener, an escape pair, a brace.
_TOKENS = re.compile(r"\\boxed\{|\\.|[{}]", re.DOTALL)


def extract_boxed(text: object, max_chars: int = MAX_CHARS) -> str | None:
    if not isinstance(text, str) or len(text) > max_chars or BOXED not in text:
        return None
    stack: list[tuple[int, bool]] = []  # (content start, opened by \boxed{)
    best: tuple[int, int] | None = None  # (start, end) of the latest-starting balanced box
    for token in _TOKENS.finditer(text):
        kind = token.group()
        if kind == BOXED or kind == "{":
            stack.append((token.end(), kind == BOXED))
        elif kind == "}" and stack:
            start, is_box = stack.pop()
            if is_box and (best is None or start > best[0]):
                best = (start, token.start())
    return None if best is None else text[best[0] : best[1]]

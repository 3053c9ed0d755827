"""A small arithmetic evaluator for model-written expressions, over a whitelisted AST.

Model output is hostile input: the text is parsed with `ast.parse` (which builds a tree and runs
nothing) and then walked by our own interpreter that knows numbers, + - * / // % **, unary signs,
the constants pi, e, tau, and a fixed set of math functions (bare or as `math.name`). Anything else
(names, attributes, strings, subscripts, lambdas, comprehensions, keywords) is rejected. The work is
structurally bounded (source length, node count, nesting depth, exponent size, integer size, argument
size of factorial/comb/perm) and a wall-clock deadline is checked at every node as a last guard.
Failure of any kind returns None; nothing raises.
"""

from __future__ import annotations

import ast
import math
import operator
import time
import warnings
from typing import Callable, Union

Number = Union[int, float]

MAX_CHARS = 1_000
MAX_NODES = 500
MAX_DEPTH = 100
MAX_EXPONENT = 1_024  # |b| in a ** b
MAX_INT_BITS = 4_096  # ints past ~1e1233 are rejected, so every operation stays cheap
MAX_COMBINATORIC_ARG = 1_000  # factorial, comb, perm
MAX_ROUND_DIGITS = 100
TIME_LIMIT_S = 0.25


class Rejected(Exception):
    """The expression is outside the whitelist or past a limit."""


def _factorial(n: Number) -> int:
    return math.factorial(_small_int(n))


def _comb(n: Number, k: Number) -> int:
    return math.comb(_small_int(n), _small_int(k))


def _perm(n: Number, k: Number) -> int:
    return math.perm(_small_int(n), _small_int(k))


def _round(x: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(x)
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise Rejected("round digits")
    return round(x, digits)


def _small_int(n: Number) -> int:
    if not isinstance(n, int) or not 0 <= n <= MAX_COMBINATORIC_ARG:
        raise Rejected("combinatoric argument")
    return n


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": abs, "round": _round, "min": min, "max": max, "int": int, "float": float,
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
    "degrees": math.degrees, "radians": math.radians, "floor": math.floor, "ceil": math.ceil,
    "trunc": math.trunc, "fabs": math.fabs, "hypot": math.hypot, "gcd": math.gcd, "pow": math.pow,
    "factorial": _factorial, "comb": _comb, "perm": _perm,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
MAX_CALL_ARGS = 8

_BINARY: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


def _depth(tree: ast.AST) -> int:
    """Nesting depth, without recursion (the tree may be adversarially deep)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _checked(value: object) -> Number:
    """Only real, finite, reasonably sized numbers flow between nodes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected("not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise Rejected("integer too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected("not finite")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise Rejected("exponent too large")
    # Refuse before computing: the result of an int power has about bit_length(base) * exponent bits.
    if isinstance(base, int) and isinstance(exponent, int) and base.bit_length() * exponent > 2 * MAX_INT_BITS:
        raise Rejected("power too large")
    return _checked(base**exponent)


class _Evaluator:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def visit(self, node: ast.AST) -> Number:
        if time.monotonic() > self.deadline:
            raise Rejected("time limit")
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            return _checked(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = self.visit(node.operand)
            return _checked(-value if isinstance(node.op, ast.USub) else +value)
        if isinstance(node, ast.BinOp):
            left, right = self.visit(node.left), self.visit(node.right)
            if isinstance(node.op, ast.Pow):
                return _power(left, right)
            if type(node.op) not in _BINARY:
                raise Rejected(f"operator {type(node.op).__name__}")
            return _checked(_BINARY[type(node.op)](left, right))
        if isinstance(node, (ast.Name, ast.Attribute)):
            return CONSTANTS[self._symbol(node, CONSTANTS)]
        if isinstance(node, ast.Call):
            if node.keywords or len(node.args) > MAX_CALL_ARGS:
                raise Rejected("call shape")
            function = FUNCTIONS[self._symbol(node.func, FUNCTIONS)]
            return _checked(function(*(self.visit(arg) for arg in node.args)))
        raise Rejected(f"node {type(node).__name__}")

    @staticmethod
    def _symbol(node: ast.AST, table: dict[str, object]) -> str:
        """`name` or `math.name`, and only names in `table`."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math":
            name = node.attr
        elif isinstance(node, ast.Name):
            name = node.id
        else:
            raise Rejected("symbol shape")
        if name not in table:
            raise Rejected(f"unknown name {name!r}")
        return name


def evaluate_expression(text: object, time_limit_s: float = TIME_LIMIT_S) -> Number | None:
    """The value of an arithmetic expression, or None if it is not one we accept."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHARS:
        return None
    try:
        with warnings.catch_warnings():  # odd text makes the parser warn (e.g. "1(2)"); it is rejected anyway
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
        if sum(1 for _ in ast.walk(tree)) > MAX_NODES or _depth(tree) > MAX_DEPTH:
            return None
        return _Evaluator(time.monotonic() + time_limit_s).visit(tree)
    # Parsing and arithmetic fail in many ways on hostile text; all of them mean "not an answer".
    except (Rejected, SyntaxError, ValueError, TypeError, ArithmeticError, MemoryError, RecursionError):
        return None


def expressions_equivalent(predicted: object, gold: object, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """True if both evaluate to the same number; a gold we cannot evaluate is compared as text."""
    gold_value = evaluate_expression(gold)
    if gold_value is None:
        return isinstance(predicted, str) and isinstance(gold, str) and "".join(predicted.split()) == "".join(gold.split())
    predicted_value = evaluate_expression(predicted)
    if predicted_value is None:
        return False
    if isinstance(predicted_value, int) and isinstance(gold_value, int):
        return predicted_value == gold_value  # exact, and no float conversion of a 400-digit integer
    try:
        return math.isclose(predicted_value, gold_value, rel_tol=rel_tol, abs_tol=abs_tol)
    except OverflowError:  # an integer beyond any float cannot be close to a float
        return False

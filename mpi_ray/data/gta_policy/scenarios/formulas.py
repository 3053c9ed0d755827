"""Math on worksheets and tables of numbers for MathOCR (rule 7), Solver and Plot targets."""

from __future__ import annotations

import random

from mpi_ray.data.gta_policy import images
from mpi_ray.data.gta_policy.instances import Step
from mpi_ray.data.gta_policy.scenarios.documents import Document
from mpi_ray.data.gta_policy.scenarios.draft import Draft

_WORKSHEET = "A worksheet with a handwritten equation."


def _signed(coefficient: int, symbol: str) -> str:
    """A signed term as written in a formula: ' + 3x', ' - x', ' - 4'; empty for a zero coefficient."""
    if coefficient == 0:
        return ""
    magnitude = abs(coefficient)
    shown = "" if magnitude == 1 and symbol else str(magnitude)
    return f" {'-' if coefficient < 0 else '+'} {shown}{symbol}"


def _quadratic(rng: random.Random) -> tuple[str, str, str]:
    """(shown formula, LaTeX, sympy expression) of x^2 + bx + c = 0 with integer roots."""
    r1, r2 = rng.sample(range(-6, 7), 2)
    b, c = -(r1 + r2), r1 * r2
    tail = f"{_signed(b, 'x')}{_signed(c, '')} = 0"
    return f"x^2{tail}", f"x^{{2}}{tail}", f"x**2 + ({b})*x + ({c})"


def _function(rng: random.Random) -> tuple[str, str, str]:
    """(shown, LaTeX, numpy expression) of a line or a parabola y = f(x)."""
    a, b = rng.choice((-3, -2, -1, 2, 3)), rng.randint(-5, 5)
    if rng.random() < 0.5:
        return f"y = {a}x + {b}", f"y = {a}x + {b}", f"{a} * x + {b}"
    return f"y = x^2 + {b}", f"y = x^{{2}} + {b}", f"x ** 2 + {b}"


def read_formula(rng: random.Random, name: str) -> Draft:
    shown, _, _ = _quadratic(rng)
    return Draft(
        image=images.formula_card([shown]),
        subject="the worksheet",
        description=_WORKSHEET,
        query=rng.choice(("Solve the equation in {ref}.", "What are the roots of the equation shown in {ref}?",
                          "Can you read the formula in {ref} and solve it for x?")),
        history=(),
        target=Step("OCR", {"image": name}, image_has_math=True),
        reason="The equation must be read first, and the image contains math, so MathOCR reads it rather than OCR.",
        case="math-image",
    )


def solve_formula(rng: random.Random, name: str) -> Draft:
    shown, latex, sympy = _quadratic(rng)
    command = (
        "```python\nfrom sympy import symbols, Eq, solve\n\ndef solution():\n    x = symbols('x')\n"
        f"    return str(solve(Eq({sympy}, 0), x))\n```"
    )
    return Draft(
        image=images.formula_card([shown]),
        subject="the worksheet",
        description=_WORKSHEET,
        query=rng.choice(("Solve the equation in {ref}.", "Find x for the equation in {ref}.")),
        history=(Step("OCR", {"image": name}, latex, image_has_math=True),),
        target=Step("Solver", {"command": command}),
        reason="MathOCR has returned the equation; the Solver solves it with sympy code that defines solution().",
        case="chain",
    )


def plot_formula(rng: random.Random, name: str) -> Draft:
    shown, latex, numpy_expression = _function(rng)
    low = rng.choice((-10, -5, -3))
    command = (
        "```python\nimport numpy as np\nimport matplotlib.pyplot as plt\n\ndef solution():\n"
        f"    x = np.linspace({low}, {-low}, 200)\n    y = {numpy_expression}\n    fig = plt.figure()\n"
        "    plt.plot(x, y)\n    return fig\n```"
    )
    return Draft(
        image=images.formula_card([shown]),
        subject="the worksheet",
        description=_WORKSHEET,
        query=f"Draw the graph of the function in {{ref}} for x from {low} to {-low}.",
        history=(Step("OCR", {"image": name}, latex, image_has_math=True),),
        target=Step("Plot", {"command": command}),
        reason="MathOCR has returned the function; Plot draws its graph with code whose solution() returns the figure.",
        case="chain",
    )


def plot_table(rng: random.Random, name: str) -> Draft:
    months = ["Jan", "Feb", "Mar", "Apr", "May"][: rng.randint(3, 5)]
    sales = [rng.randint(20, 150) for _ in months]
    document = Document(["Month   Sales", *(f"{m:<8}{s}" for m, s in zip(months, sales))], "the sales table",
                        "A table of monthly sales figures.", ())
    command = (
        "```python\nimport matplotlib.pyplot as plt\n\ndef solution():\n"
        f"    months = {months!r}\n    sales = {sales!r}\n    fig = plt.figure()\n"
        "    plt.bar(months, sales)\n    plt.ylabel('Sales')\n    return fig\n```"
    )
    return Draft(
        image=document.render(),
        subject=document.subject,
        description=document.description,
        query="Make a bar chart of the monthly sales in {ref}.",
        history=(document.read(name),),
        target=Step("Plot", {"command": command}),
        reason="OCR has returned the sales table; Plot draws the bar chart with code whose solution() returns the figure.",
        case="chain",
    )

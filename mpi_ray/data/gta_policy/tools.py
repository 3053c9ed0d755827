"""The 14 GTA tool types of GTAPolicy, their versions and arguments, held as data (paper Fig. 20).

The policy document, the generator and the scorer all read these records; nothing else lists tools.
Every version of a tool type takes the same arguments; only the rules decide which version to call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# How the scorer compares one argument value (reference §3.4).
EXACT, TEXT, EXPRESSION, IOU = "exact", "text", "expression", "iou"


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type: str  # shown in the policy: image, text, int, bool, bbox, position, color, code, expression
    required: bool
    description: str
    metric: str  # EXACT | TEXT | EXPRESSION | IOU
    default: Any = None


@dataclass(frozen=True)
class ToolType:
    name: str
    category: str  # GTA's evaluation categories: perception, operation, logic, creativity
    versions: int  # 0 = unversioned: the tool is called by its bare name
    description: str
    arguments: tuple[ArgSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every callable name of this tool type: ("OCR_v1", ..., "OCR_v5") or ("Calculator",)."""
        if self.versions == 0:
            return (self.name,)
        return tuple(versioned_name(self.name, v) for v in range(1, self.versions + 1))

    def argument(self, name: str) -> ArgSpec | None:
        return next((arg for arg in self.arguments if arg.name == name), None)


def _image(description: str = "The input image, by its exact name such as image/image_1.jpg.") -> ArgSpec:
    return ArgSpec("image", "image", True, description, EXACT)


_BBOX_TEXT = "The bbox coordinate, in the format of (x1, y1, x2, y2)."
_CODE_PLOT = (
    "Markdown-style Python code. It must define a function named `solution` that returns the "
    "matplotlib figure directly; import the libraries it needs."
)
_CODE_SOLVER = (
    "Markdown-style Python code. It must define a function named `solution` that uses the `sympy` "
    "library to solve the equations and returns the answer as a str; do not print the answer."
)

TOOL_TYPES: tuple[ToolType, ...] = (
    ToolType(
        "Calculator", "logic", 0,
        "A calculator tool. The input must be a single Python expression and you cannot import "
        "packages. You can use functions of the `math` package without importing it.",
        (ArgSpec("expression", "expression", True, "The arithmetic expression to evaluate.", EXPRESSION),),
    ),
    ToolType(
        "OCR", "perception", 5,
        "Recognizes all the text in the input image and returns it with the text positions.",
        (_image(),),
    ),
    ToolType(
        "CountGivenObject", "logic", 4,
        "Counts the number of objects of a given description in the input image.",
        (_image(), ArgSpec("text", "text", True, "The description of the object to count, in English.", TEXT)),
    ),
    ToolType(
        "ImageDescription", "perception", 5,
        "Returns a brief description of the input image.",
        (_image(),),
    ),
    ToolType(
        "GoogleSearch", "operation", 3,
        "Searches the input query on Google and returns the top results.",
        (
            ArgSpec("query", "text", True, "The search query.", TEXT),
            ArgSpec("k", "int", False, "The number of results to return.", EXACT, default=10),
        ),
    ),
    ToolType(
        "RegionAttributeDescription", "perception", 2,
        "Describes an attribute of one region of the input image.",
        (
            _image(),
            ArgSpec("bbox", "bbox", True, _BBOX_TEXT, IOU),
            ArgSpec("attribute", "text", True, "The attribute to describe, such as the color of the object.", TEXT),
        ),
    ),
    ToolType(
        "TextToBbox", "perception", 0,
        "Detects the location of an object from its description and returns its bbox.",
        (
            _image(),
            ArgSpec("text", "text", True, "The description of the object, in English.", TEXT),
            ArgSpec(
                "top1", "bool", False,
                "If true, return only the box with the highest score; if false, return all detected boxes.",
                EXACT, default=True,
            ),
        ),
    ),
    ToolType(
        "Plot", "logic", 0,
        "Executes Python code that draws a diagram and returns the figure as an image.",
        (ArgSpec("command", "code", True, _CODE_PLOT, TEXT),),
    ),
    ToolType(
        "MathOCR", "logic", 0,
        "Recognizes the math expressions in the input image and returns them in LaTeX.",
        (_image(),),
    ),
    ToolType(
        "Solver", "logic", 0,
        "Executes Python code that solves math equations and returns the answer.",
        (ArgSpec("command", "code", True, _CODE_SOLVER, TEXT),),
    ),
    ToolType(
        "DrawBox", "operation", 0,
        "Draws a box on a region of the input image and returns the edited image.",
        (
            _image(),
            ArgSpec("bbox", "bbox", True, _BBOX_TEXT, IOU),
            ArgSpec("annotation", "text", False, "An optional label written next to the box.", TEXT),
        ),
    ),
    ToolType(
        # The paper's description here copies DrawBox's; this one says what AddText does.
        "AddText", "operation", 0,
        "Writes text at a position of the input image and returns the edited image.",
        (
            _image(),
            ArgSpec("text", "text", True, "The text to write.", TEXT),
            ArgSpec(
                "position", "position", True,
                'The left-bottom corner of the text as "(x, y)", or one of l/m/r (left, middle, right) '
                'followed by one of t/m/b (top, middle, bottom), like "mt" for middle-top.',
                EXACT,
            ),
            ArgSpec("color", "color", False, "The color of the text.", EXACT, default="red"),
        ),
    ),
    ToolType(
        "TextToImage", "creativity", 3,
        "Generates an image from a series of keywords.",
        (ArgSpec("keywords", "text", True, "A series of keywords separated by commas.", TEXT),),
    ),
    ToolType(
        "ImageStylization", "creativity", 3,
        "Modifies the input image according to an instruction, e.g. \"turn him into a cyborg\" or "
        "\"add fireworks to the sky\".",
        (_image(), ArgSpec("instruction", "text", True, "The editing instruction, in English.", TEXT)),
    ),
)

TOOLS_BY_NAME: dict[str, ToolType] = {tool.name: tool for tool in TOOL_TYPES}
VERSIONED_TOOLS: tuple[str, ...] = tuple(tool.name for tool in TOOL_TYPES if tool.versions)
# Argument names are unique in meaning across tools, so the metric is a property of the name.
ARG_METRICS: dict[str, str] = {arg.name: arg.metric for tool in TOOL_TYPES for arg in tool.arguments}

_VERSION_SUFFIX = re.compile(r"^(?P<type>[A-Za-z]+)_v(?P<version>\d{1,3})$")


def versioned_name(tool_type: str, version: int) -> str:
    return f"{tool_type}_v{version}"


def tool_type_of(name: str) -> str:
    """The tool type of a called name: "OCR_v3" -> "OCR", "Calculator" -> "Calculator"."""
    match = _VERSION_SUFFIX.match(name)
    return match.group("type") if match else name


def version_of(name: str) -> int | None:
    match = _VERSION_SUFFIX.match(name)
    return int(match.group("version")) if match else None

"""The fixed text the tiny model's tokenizer is trained on: the project's own domain vocabulary.

Independent of the seed on purpose: every tiny checkpoint of a size shares one tokenizer, so data
token lengths measured with one apply to all.
"""

from __future__ import annotations

import itertools
from typing import Iterator

SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
SIZES = ("small", "large")
MATERIALS = ("rubber", "metal")
TOOLS = (
    "Calculator", "GoogleSearch", "Plot", "Solver", "OCR", "ImageDescription", "TextToBbox",
    "CountGivenObject", "MathOCR", "DrawBox", "AddText", "TextToImage", "ImageStylization",
    "RegionAttributeDescription",
)
ARGUMENTS = (
    "image", "text", "query", "k", "bbox", "attribute", "expression", "command", "annotation",
    "position", "color", "keywords", "instruction", "top1",
)
PHRASES = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer.",
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{{}}.",
    "According to Policy: {name}, what should be the response for the given image?",
    "Suppose we have an updated Policy: {name} as follows:",
    "--- Policy: {name} --- # Condition {a}: If there is a {size} {color} {material} {shape} in the image,",
    "go to Condition {a}.{b}. Otherwise, go to Condition {b}. The response is Case {a}.",
    "Condition {a}.{b} is satisfied because the image contains a {size} {color} {shape}, so the answer is Case {b}.",
    "<think> Recall Condition {a}: is there a {color} object that is also {size}? Yes. </think> \\boxed{{Case {b}}}",
    "How many {color} objects are there? Is there a {size} {material} {shape}? yes no",
    "User profile: account_type {acct}, credits {a}{b}0, age {b}{a}.",
    '{{"name": "{tool}_v{a}", "arguments": {{"{arg}": "image/image_{b}.jpg"}}}}',
    "If the user's account_type is {acct} and credits > 500, call {tool}_v{b}; otherwise call {tool}_v{a}.",
    "Given the interaction history so far, you need to determine the appropriate tool to use at the current step.",
    "### Tool Calling Rule Override ### Some rules are updated as follows:",
    "The tool returned: {b} {shape}s were found in the region ({a}, {b}, {a}{b}, {b}{a}).",
)


def corpus_lines() -> Iterator[str]:
    """Deterministic lines that cover every word and number shape the datasets use."""
    names = ("L3-Surinu", "L6-Kavoma", "L4-Tedalo", "L2-Mirefa")
    grid = itertools.product(range(10), SHAPES, COLORS, SIZES, MATERIALS)
    for index, (digit, shape, color, size, material) in enumerate(grid):
        fields = {
            "name": names[index % len(names)], "a": digit, "b": (digit * 7 + index) % 10,
            "shape": shape, "color": color, "size": size, "material": material,
            "tool": TOOLS[index % len(TOOLS)], "arg": ARGUMENTS[index % len(ARGUMENTS)],
            "acct": "ABCD"[index % 4],
        }
        yield PHRASES[index % len(PHRASES)].format(**fields)

"""Load a YAML config, apply `section.key=value` overrides, validate, and explain any error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mpi_ray.config.schema import PipelineConfig


class ConfigError(ValueError):
    """A config problem, already phrased for the user (key, what was given, what is allowed)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently,
    so a second `rl:` section would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """The YAML document at `path`; every way it can be unreadable is a ConfigError naming the file."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    # YAML scalars: 1e-6, true, null, [a, b] all mean what they say on the command line.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[: depth + 1])} is not a section")
        node = child
    node[path[-1]] = value


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at `loc`'s parent, for 'unknown key' messages."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def explain(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<config>"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(PipelineConfig, item["loc"]))
            lines.append(f"unknown key '{key}'; allowed keys here: {allowed}")
        elif item["type"] == "value_error" and not item["loc"]:
            lines.append(str(item["ctx"]["error"]))
        else:
            given = item.get("input")
            shown = repr(given) if not isinstance(given, dict) else "a section"
            lines.append(f"'{key}' = {shown}: {item['msg']}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it: sections merge key by key, any other value (lists too) replaces."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def read_tree(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config file's sections; a file that starts with `extends: other.yaml` (relative to itself) is
    that file's sections with its own laid over them, so a variant config states only what differs."""
    path = Path(path)
    if path.resolve() in seen:
        raise ConfigError(f"config {path} extends itself (through {' -> '.join(str(p) for p in seen)})")
    loaded = read_yaml(path)
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    tree = dict(loaded or {})
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigError(f"config {path}: 'extends' must name one YAML file, got {parent!r}")
    return _merge(read_tree(path.parent / parent, seen + (path.resolve(),)), tree)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    tree = read_tree(path) if path is not None else {}
    for text in overrides:
        apply_override(tree, *parse_override(text))
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(explain(exc)) from None


def dump_config(cfg: PipelineConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

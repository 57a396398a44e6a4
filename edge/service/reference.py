"""``safety-edge config reference``: the config reference generated from the pydantic models.

One markdown table per section (``cameras[]``, ``cameras[].tasks.<kind>.zones[]``, ...)
with each key's type, default and description, read from
:class:`edge.config.GatewayConfig` and the models it nests, so the reference cannot
drift from what ``config check`` accepts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge.config import GatewayConfig

__all__ = ["reference_markdown"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        if issubclass(tp, BaseModel):
            return "section"
        if issubclass(tp, Path):
            return "path"
        return tp.__name__
    return str(tp).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`" if value not in ({}, []) else f"`{value}`"
    value = field.default
    if value is PydanticUndefined:
        return ""
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "`null`"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _models(tp: Any) -> list[tuple[str, type[BaseModel]]]:
    """Nested models of an annotation with the path suffix they live under."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models(a)]
    if origin is list:
        return [("[]" + s, m) for s, m in _models(args[0])] if args else []
    if origin is dict and len(args) == 2:
        key = args[0]
        label = "<" + ("|".join(typing.get_args(key)) if typing.get_origin(key) else "key") + ">"
        return [(f".{label}" + s, m) for s, m in _models(args[1])]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [("", tp)]
    return []


def _sections(
    model: type[BaseModel], path: str, seen: set[type[BaseModel]]
) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, field in model.model_fields.items():
        for suffix, sub in _models(field.annotation):
            if sub in seen:
                continue
            seen.add(sub)
            yield from _sections(sub, f"{path}.{name}{suffix}" if path else f"{name}{suffix}", seen)


def reference_markdown() -> str:
    """The whole reference, ``##`` per section, ending with a newline."""
    out = [
        "# gateway.yaml reference",
        "",
        "Generated from the pydantic models (`safety-edge config reference`); see "
        "`safety-edge config example` for a commented example. Unknown keys are errors.",
        "",
    ]
    for path, model in _sections(GatewayConfig, "", {GatewayConfig}):
        title = path or "(top level)"
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [f"## `{title}`", "", doc, "", "| key | type | default | description |"]
        out.append("|---|---|---|---|")
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|")
            out.append(
                f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |"
            )
        out.append("")
    return "\n".join(out)

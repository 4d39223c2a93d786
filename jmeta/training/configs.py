"""Typed configs from the command line and YAML: ``field=value`` overrides of a frozen dataclass,
coerced to each field's annotated type, and per-field help taken from the dataclass docstring.

Every config in jmeta documents its fields in an ``Attributes:`` section of its docstring
(shared/STYLE.md §9); :func:`field_docs` reads that section, so the CLI's help is the docstring.
Values are parsed by type, never evaluated:

* ``int``, ``float``, ``str``; ``bool`` from ``true/false/yes/no/1/0/on/off``;
* ``X | None`` from ``none``/``null`` or a value of ``X``;
* ``tuple[int, ...]`` from ``64,64`` (or ``64x64``); a range ``tuple[float, float]`` from
  ``0.5:0.9`` or ``0.5,0.9``; a field typed ``Range | None`` also takes one number.

>>> from jmeta.algorithms import maml_rl
>>> parse_overrides(maml_rl.Config, ["inner_lr=0.2", "hidden_sizes=32,32"])
{'inner_lr': 0.2, 'hidden_sizes': (32, 32)}
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from typing import Any, Iterable, Mapping

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null", "~"}


class ConfigError(ValueError):
    """A config field, value or file a user wrote is wrong; the message is one line."""


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of the dataclass ``cls`` (init fields only)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def field_docs(cls: type) -> dict[str, str]:
    """Per-field help from the ``Attributes:`` section of ``cls``'s docstring (and its bases').

    A line ``name: text`` starts a field; indented lines below continue it. ``a, b: text``
    documents several fields at once.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        if "Attributes:" not in doc:
            continue
        section = doc.split("Attributes:", 1)[1].splitlines()
        current: list[str] = []
        names: list[str] = []
        indent = None
        for line in section[1:] if section and not section[0].strip() else section:
            if not line.strip():
                continue
            lead = len(line) - len(line.lstrip())
            if indent is None:
                indent = lead
            if lead < indent:
                break
            m = re.match(r"^\s*([A-Za-z_][\w, ]*):\s*(.*)$", line) if lead == indent else None
            if m:
                for n in names:
                    docs[n] = " ".join(current)
                names = [n.strip() for n in m.group(1).split(",") if n.strip()]
                current = [m.group(2).strip()]
            elif names:
                current.append(line.strip())
        for n in names:
            docs[n] = " ".join(current)
    return docs


def _is_range(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple and typing.get_args(tp) in ((float, float),)


def _describe(tp: Any) -> str:
    if _is_range(tp):
        return "a range low:high"
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if typing.get_origin(args[0]) is tuple:
                return (f"a comma-separated list of {len(typing.get_args(args[0]))}-tuples "
                        f"a:b, e.g. 400:0.01,600:0.003 (empty: none)")
            return f"a comma-separated list of {_describe(args[0])}"
        return "a comma-separated tuple"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "none"
    return {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _split(text: str) -> list[str]:
    if re.fullmatch(r"\s*\d+(\s*x\s*\d+)+\s*", text):  # 64x64
        return [p.strip() for p in text.split("x")]
    return [p.strip() for p in re.split(r"[,:]", text)]


def coerce(tp: Any, value: Any, field: str) -> Any:
    """``value`` (a string from the command line, or a YAML scalar/list) as type ``tp``.

    Raises:
      ConfigError: naming ``field``, the value and the expected type.
    """
    def fail():
        raise ConfigError(f"{field}: expected {_describe(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if isinstance(value, str) and value.strip().lower() in _NONE and type(None) in args:
            return None
        if value is None and type(None) in args:
            return None
        # A range field also takes one number (``friction=0.7`` means the fixed value 0.7).
        for a in sorted((a for a in args if a is not type(None)), key=_is_range):
            try:
                return coerce(a, value, field)
            except ConfigError:
                continue
        if any(_is_range(a) for a in args):
            try:
                return coerce(float, value, field)
            except ConfigError:
                pass
        fail()
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        fail()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        fail()
    if tp is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                fail()
        fail()
    if tp is float:
        if isinstance(value, bool):
            fail()
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                fail()
        else:
            fail()
        if math.isnan(out):
            fail()
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        fail()
    if origin is tuple:
        args = typing.get_args(tp)
        nested = len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is tuple
        if isinstance(value, str):  # "400:0.01,600:0.003": ',' between items, ':' inside one
            items = [p.strip() for p in value.split(",") if p.strip()] if nested else \
                _split(value)
        else:
            items = value
        if not isinstance(items, (list, tuple)):
            fail()
        try:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(args[0], v, field) for v in items)
            if len(items) != len(args):
                fail()
            return tuple(coerce(a, v, field) for a, v in zip(args, items))
        except ConfigError:
            fail()
    fail()


def parse_assignment(text: str) -> tuple[str, str]:
    """``"field=value"`` as ``(field, value)`` (dashes in the name become underscores).

    Raises:
      ConfigError: no ``=``, or nothing before it.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected field=value")
    name, value = text.split("=", 1)
    name = name.strip().replace("-", "_")
    if not name:
        raise ConfigError(f"--set {text!r}: missing field name before '='")
    return name, value


def check_fields(cls: type, names: Iterable[str], what: str) -> None:
    """Raises :class:`ConfigError` for the first name that is not a field of ``cls``."""
    valid = field_types(cls)
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown {what} field {name!r}{hint}; valid: {', '.join(valid)}")


def parse_overrides(cls: type, assignments: Iterable[str], what: str = "config") -> dict[str, Any]:
    """``["field=value", ...]`` as ``{field: typed value}`` for the dataclass ``cls``.

    Raises:
      ConfigError: malformed assignment, unknown field, or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    types_ = field_types(cls)
    for text in assignments:
        name, value = parse_assignment(text)
        check_fields(cls, [name], what)
        out[name] = coerce(types_[name], value, name)
    return out


def typed_mapping(cls: type, mapping: Mapping[str, Any], what: str = "config") -> dict[str, Any]:
    """A mapping (e.g. a YAML section) as typed field values of ``cls``."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{what}: expected a mapping of field: value, got {type(mapping).__name__}")
    check_fields(cls, mapping, what)
    types_ = field_types(cls)
    return {k: coerce(types_[k], v, k) for k, v in mapping.items()}


def build(cls: type, values: Mapping[str, Any], what: str = "config") -> Any:
    """``cls(**values)``, turning the dataclass's own validation errors into :class:`ConfigError`."""
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{what}: {str(err).splitlines()[0] if str(err) else err!r}") from None


def to_jsonable(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-safe dict (tuples become lists)."""
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v
    return {f.name: conv(getattr(config, f.name)) for f in dataclasses.fields(config)}


def help_table(cls: type) -> list[tuple[str, str, str, str]]:
    """``[(field, type, default, help)]`` of ``cls`` for ``--help``-style listings."""
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        rows.append((f.name, _describe(field_types(cls)[f.name]), repr(default),
                     docs.get(f.name, "")))
    return rows

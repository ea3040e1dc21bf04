"""``rcs-ray config --explain KEY``: a config key's type, default and doc, read from the dataclasses' field docs
(:func:`~rcs_ray.config.fields.doc_field`). A key is written as in YAML or an override; list indices may be left out
(``stages.train.max_steps`` and ``stages.0.train.max_steps`` name the same key)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import textwrap
import typing
from typing import Any, Iterator, Optional, Tuple, Union

from omegaconf import MISSING

from rcs_ray.config.fields import field_doc
from rcs_ray.config.run import RunConfig
from rcs_ray.errors import RcsInputError

WIDTH = 116


def config_keys(cls: type = RunConfig, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, Any]]:
    """Every key under the dataclass ``cls``, depth first, as ``(dotted key, field, type hint)``; the keys of a list's
    items follow the list's key without an index (``stages.train``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        yield key, f, hints[f.name]
        inner = section_of(hints[f.name])
        if inner is not None:
            yield from config_keys(inner, key + ".")


def section_of(hint: Any) -> Optional[type]:
    """The dataclass a key holds: itself, optional, or as a list's items (else None)."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (list, Union):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def type_name(hint: Any) -> str:
    """A type hint as written in the schema (``Optional[int]``, ``List[str]``, ``LoraConfig``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        rest = [a for a in args if a is not type(None)]
        inner = ", ".join(type_name(a) for a in rest)
        return f"Optional[{inner}]" if len(rest) == 1 and len(args) == 2 else f"Union[{inner}]"
    if origin in (list, dict):
        return f"{'List' if origin is list else 'Dict'}[{', '.join(type_name(a) for a in args)}]"
    if hint is Any:
        return "Any"
    return getattr(hint, "__name__", str(hint))


def default_text(f: dataclasses.Field) -> str:
    """A field's default as YAML would show it (``required`` for a key with none)."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    if value is MISSING or value == MISSING:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(its keys' defaults)"
    return json.dumps(value, default=str)


def explain(key: str) -> str:
    """The type, default and doc of the config key ``key`` (under a section: its doc and keys).

    Args:
        key: a dotted key, e.g. ``train.beta``, ``sampling.n``, ``stages.0.train.max_steps``.

    Raises:
        RcsInputError: not a key; the message names close matches.
    """
    wanted = ".".join(part for part in key.strip().split(".") if not part.isdigit())
    keys = {k: (f, hint) for k, f, hint in config_keys()}
    if wanted not in keys:
        close = difflib.get_close_matches(wanted, list(keys), n=3, cutoff=0.6)
        top = [g.name for g in dataclasses.fields(RunConfig)]
        more = f"did you mean {', '.join(close)}?" if close else f"the top-level keys are {', '.join(top)}"
        raise RcsInputError(f"unknown config key {key!r}; {more}")
    f, hint = keys[wanted]
    lines = [wanted, f"  type:    {type_name(hint)}", f"  default: {default_text(f)}"]
    lines += textwrap.wrap(field_doc(f), WIDTH, initial_indent="  ", subsequent_indent="  ")
    inner = section_of(hint)
    if inner is not None:
        names = [g.name for g in dataclasses.fields(inner)]
        where = "each item's keys" if typing.get_origin(hint) is list else "keys"
        lines += textwrap.wrap(f"{where}: {', '.join(names)}", WIDTH, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)

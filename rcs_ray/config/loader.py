"""Loading a config: the schema defaults, the YAML files named by ``extends:`` (relative to the file that names them),
the file itself, then ``key=value`` overrides, merged with OmegaConf and validated (:mod:`rcs_ray.config.checks`).

Every problem is raised as :class:`~rcs_ray.errors.RcsInputError` with one line that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Optional, Sequence, Tuple

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rcs_ray.config.checks import validate
from rcs_ray.config.run import RunConfig
from rcs_ray.config.stage import Overrides
from rcs_ray.config.stages import one_line
from rcs_ray.errors import RcsInputError


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise RcsInputError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RcsInputError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RcsInputError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def _layers(path: str, seen: tuple = ()) -> list[tuple[str, dict]]:
    """The YAML layers of ``path``, parents (``extends:``) first."""
    real = os.path.realpath(path)
    if real in seen:
        raise RcsInputError(f"{path}: 'extends' forms a cycle")
    data = _read_yaml(path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    layers = []
    for parent in parents:
        layers += _layers(os.path.join(os.path.dirname(path), parent), seen + (real,))
    return layers + [(path, data)]


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, merge, override and validate a config; see the module docstring.

    Raises:
        RcsInputError: one line naming the file and key at fault.
    """
    merged = OmegaConf.structured(RunConfig)
    for source, data in _layers(path) if path else []:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as exc:
            prefix, exc = _in_list_item(RunConfig, data) or ("", exc)
            raise RcsInputError(f"{source}: {one_line(exc, prefix)}") from None
    for item in overrides:
        if "=" not in item:
            raise RcsInputError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        try:
            OmegaConf.update(merged, key.strip(), value, merge=True)
        except (OmegaConfBaseException, IndexError, KeyError, ValueError, TypeError) as exc:
            raise RcsInputError(f"override {item!r}: {one_line(exc)}") from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise RcsInputError(f"{path or 'config'}: {one_line(exc)}") from None
    source = path or "config"
    validate(cfg, source=f"{source} (with overrides)" if overrides else source)
    return cfg


def _in_list_item(cls: type, data: dict, prefix: str = "") -> Optional[Tuple[str, OmegaConfBaseException]]:
    """The first list item in ``data`` (a YAML mapping for the dataclass ``cls``) that does not merge into its own
    dataclass, as ``(its key with a trailing dot, the error)``: OmegaConf names a key inside a list item from the item
    down (``train.lrr``), and ``prefix + key`` names it from the root (``stages.0.train.lrr``)."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        args = typing.get_args(hint)
        if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                found = _in_list_item(args[0], item, f"{prefix}{key}.{i}.")
                if found:
                    return found
                try:
                    OmegaConf.merge(OmegaConf.structured(args[0]), OmegaConf.create(item))
                except OmegaConfBaseException as exc:
                    return f"{prefix}{key}.{i}.", exc
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            found = _in_list_item(hint, value, f"{prefix}{key}.")
            if found:
                return found
    return None


def _as_written(cfg: Any, data: Any) -> Any:
    """``data`` (``cfg`` as containers) with each stage's ``train`` overrides as the keys it sets, as written."""
    if isinstance(cfg, Overrides):
        return cfg.overrides()
    if dataclasses.is_dataclass(cfg):
        for f in dataclasses.fields(cfg):
            data[f.name] = _as_written(getattr(cfg, f.name), data[f.name])
    elif isinstance(cfg, list):
        return [_as_written(c, d) for c, d in zip(cfg, data)]
    return data


def to_yaml(cfg: Any) -> str:
    """The config as YAML (for manifests and logs); a stage's ``train`` shows the keys it sets."""
    data = _as_written(cfg, OmegaConf.to_container(OmegaConf.structured(cfg)))
    return OmegaConf.to_yaml(OmegaConf.create(data))


def to_dict(cfg: Any) -> dict:
    """The config as plain containers, interpolations resolved; a stage's ``train`` holds the keys it sets."""
    return _as_written(cfg, OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))

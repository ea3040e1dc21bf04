"""What every config component shares: fields that carry their own doc, and the checker its checks report through.

A field's doc is data (``metadata["doc"]``): ``rcs-ray config --explain KEY`` reads it (:mod:`rcs_ray.config.explain`),
and a test checks that every field of every config dataclass has one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Optional

from rcs_ray.errors import RcsInputError


def doc_field(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Optional[Callable[[], Any]] = None):
    """A dataclass field with its documentation.

    Args:
        default: the default value (leave it out with ``factory``).
        doc: what the field means, its unit, its choices; read by ``rcs-ray config --explain``.
        factory: a default factory, for mutable defaults (lists, dicts, nested configs).
    """
    metadata = {"doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_doc(f: dataclasses.Field) -> str:
    """The doc of a dataclass field (empty if it has none)."""
    return f.metadata.get("doc", "")


class Checker:
    """Reports a config problem as one :class:`~rcs_ray.errors.RcsInputError` line naming the file and the key.

    Every component's ``check`` takes one, with the dotted key it sits at (``train``, ``stages.0.train``, ...).
    """

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, msg: str):
        """Raises RcsInputError ``<source>: key '<key>': <msg>``."""
        raise RcsInputError(f"{self.source}: key '{key}': {msg}")

    def choice(self, key: str, value, choices: Iterable):
        if value not in choices:
            self.fail(key, f"{value!r} is not one of {list(choices)}")

    def at_least(self, key: str, value, low):
        if value is None or value < low:
            self.fail(key, f"must be >= {low}, got {value}")

    def finite(self, key: str, value):
        if value is None or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")

    def resources(self, key: str, resources) -> None:
        """Custom Ray resources: names other than CPU / GPU (those have their own keys), amounts >= 0."""
        for name, amount in (resources or {}).items():
            if name in ("CPU", "GPU", "memory"):
                self.fail(f"{key}.{name}", "set CPUs / GPUs with num_cpus / num_gpus, not as a custom resource")
            self.at_least(f"{key}.{name}", amount, 0.0)

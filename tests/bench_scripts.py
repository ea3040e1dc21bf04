"""Importing benchmark scripts and their helpers as the scripts import each other: with benchmarks/ on sys.path
(``python benchmarks/X.py`` puts it there), for tests that check a script's parts without running it."""

import importlib
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def import_scripts(*names: str) -> tuple:
    """The modules ``benchmarks/<name>.py``, imported with benchmarks/ on sys.path for the duration of the import."""
    sys.path.insert(0, BENCH)
    try:
        return tuple(importlib.import_module(n) for n in names)
    finally:
        sys.path.remove(BENCH)

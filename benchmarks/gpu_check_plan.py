"""``benchmarks/gpu_check.py --plan``: the checks in order with what each needs and whether it will be skipped here
(:func:`missing`), every module and config they use loaded (no CUDA needed), the ``gpu``-marked tests ``pytest_gpu``
runs, and the flags ``pipeline_vllm`` passes. Standard library imports only (loaded beside ``gpu_check.py`` without
touching ``sys.path``)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def missing(c) -> list:
    """What the check ``c`` needs that is not installed here (its ``modules``, or every one of ``any_of``)."""
    gone = [f"{m} not installed" for m in c.modules if importlib.util.find_spec(m) is None]
    if c.any_of and all(importlib.util.find_spec(m) is None for m in c.any_of):
        gone += [f"{m} not installed" for m in c.any_of]
    return gone


def gpu_tests(T) -> list:
    """``file::test`` of every function marked ``gpu`` in the files :func:`gpu_check_tasks.gpu_test_files` lists
    (``T``: the loaded ``gpu_check_tasks``)."""
    found = []
    for rel in T.gpu_test_files():
        tree = ast.parse(open(os.path.join(T.ROOT, rel)).read())
        found += [
            f"{rel}::{f.name}"
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and any("gpu" in ast.unparse(d) for d in f.decorator_list)
        ]
    return found


def plan(checks: list, args, T) -> int:
    """Print each check (what it needs, its overrides, whether it will be skipped here), import what it uses and load
    the config with its overrides; 1 when anything failed to load. ``T``: the loaded ``gpu_check_tasks``."""
    problems = []
    print(f"GPU check plan: budget {args.budget_s} s, checks in this order (each in its own process):")
    for i, c in enumerate(checks, 1):
        needs = ", ".join(
            list(c.modules)
            + ([" | ".join(c.any_of)] if c.any_of else [])
            + (["CUDA"] if c.cuda else [])
            + (["tiny world"] if c.world else [])
        )
        print(f"{i}. {c.name:<18} timeout {c.timeout_s:>3} s  needs {needs}\n   {c.what}")
        if c.name not in ("environment", "tiny_world", "pytest_gpu"):
            print(f"   overrides: {' '.join(T.overrides(c.name, 'cuda', args.world, '<work>'))}")
        gone = missing(c)
        if gone:
            print(f"   here: will be skipped ({'; '.join(gone)})")
        for mod in c.imports if not any(importlib.util.find_spec(m) is None for m in c.modules) else ():
            try:
                importlib.import_module(mod)
            except Exception as exc:  # noqa: BLE001 - every broken import is reported
                problems.append(f"{c.name}: import {mod}: {type(exc).__name__}: {exc}")
        if (c.world or c.name == "pytest_gpu") and importlib.util.find_spec("omegaconf") is not None:
            try:
                from rcs_ray.config import load_config

                load_config(os.path.join(T.ROOT, T.CONFIG), T.overrides(c.name, "cuda", args.world, "/tmp/w"))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{c.name}: {T.CONFIG} with its overrides: {type(exc).__name__}: {exc}")
        if c.name == "pytest_gpu":
            tests = gpu_tests(T)
            print(f"   tests: {', '.join(tests) or 'none'}")
            problems += [] if tests else ["pytest_gpu: no gpu-marked test found"]
        if c.name == "pipeline_vllm" and "omegaconf not installed" not in gone:
            problems += pipeline_script_flags()
    print(
        f"work dir: a new temporary dir; world: {args.world} "
        f"({'built' if os.path.isdir(args.world) and os.listdir(args.world) else 'not built yet'}); out: {args.out}"
    )
    for p in problems:
        print(f"PROBLEM: {p}")
    print("plan: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


def pipeline_script_flags() -> list:
    """benchmarks/pipeline_throughput.py loads and takes the flags the check passes."""
    import contextlib
    import io

    path = os.path.join(HERE, "pipeline_throughput.py")
    try:
        spec = importlib.util.spec_from_file_location("pipeline_throughput", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            mod.main(["--help"])
    except Exception as exc:  # noqa: BLE001
        return [f"pipeline_vllm: {path}: {type(exc).__name__}: {exc}"]
    return [
        f"pipeline_vllm: {path} has no {flag}"
        for flag in ("--engines", "--prompts", "--repeats", "--out")
        if flag not in buf.getvalue()
    ]

"""How ``benchmarks/workflow_sim.py`` times a whole workflow without changing it: :class:`Timeline` wraps the public
entry points the workflow and the evaluation call (``rcs_ray.sampling.run``, ``rcs_ray.train.run``,
``rcs_ray.evaluate.policy_rewards``) and, where they exist, the pipeline's per-round ``build_dataset`` and the
writer's ``write`` / ``commit``; :func:`read_logs` reads what the simulated models logged (loads, scoring calls,
generate calls). Every time is ``time.time()`` (the actors' clock on this host)."""

from __future__ import annotations

import json
import os
import time


class Timeline:
    """The driver's phases: ``steps`` (sample / train / eval, with start, end and what the step returned), the
    start of each sampling round (``rounds``: ``(stage, t)``) and the writer's seconds per phase (``writer``)."""

    def __init__(self):
        self.steps: list[dict] = []
        self.rounds: list[tuple] = []
        self.writer: dict = {}
        self.current = None
        self._undo: list[tuple] = []

    def _patch(self, obj, name: str, make) -> None:
        orig = getattr(obj, name, None)
        if orig is None:  # the code moved: that detail is not measured (the report says so)
            return
        self._undo.append((obj, name, orig))
        setattr(obj, name, make(orig))

    def _step(self, kind: str, label):
        def make(orig):
            def wrapper(*a, **kw):
                step = {"kind": kind, "label": label(a, kw), "t0": time.time()}
                self.steps.append(step)
                prev, self.current = self.current, step["label"]
                try:
                    res = orig(*a, **kw)
                    step["result"] = res
                    return res
                finally:
                    step["t1"], self.current = time.time(), prev

            return wrapper

        return make

    def _timed(self, orig):
        def wrapper(*a, **kw):
            t0 = time.time()
            try:
                return orig(*a, **kw)
            finally:
                self.writer[self.current] = self.writer.get(self.current, 0.0) + time.time() - t0

        return wrapper

    def _round(self, orig):
        def wrapper(*a, **kw):
            self.rounds.append((self.current, time.time()))
            return orig(*a, **kw)

        return wrapper

    def __enter__(self):
        import rcs_ray.evaluate as evaluate
        import rcs_ray.sampling as sampling
        import rcs_ray.sampling.pipeline as pipeline
        import rcs_ray.sampling.writer as writer
        import rcs_ray.train as train

        self._patch(sampling, "run", self._step("sample", lambda a, kw: f"stage{kw.get('stage', 0) + 1}"))
        self._patch(train, "run", self._step("train", lambda a, kw: f"stage{kw.get('stage', 0) + 1}"))
        self._patch(evaluate, "policy_rewards", self._step("eval", lambda a, kw: kw.get("desc", "eval")))
        self._patch(pipeline, "build_dataset", self._round)
        cls = getattr(writer, "OutputWriter", None)
        if cls is not None:
            timed = {n: self._timed(getattr(cls, n)) for n in ("write", "commit") if hasattr(cls, n)}
            self._patch(writer, "OutputWriter", lambda orig: type("TimedWriter", (orig,), timed))
        return self

    def __exit__(self, *exc):
        for obj, name, orig in reversed(self._undo):
            setattr(obj, name, orig)


def read_logs(log_dir: str) -> dict:
    """``loads`` and ``scores`` from ``events.ndjson``, ``generate`` calls from the engines' ``engine-*.jsonl``."""
    out: dict = {"loads": [], "scores": [], "generate": []}
    for name in sorted(os.listdir(log_dir)):
        if not (name == "events.ndjson" or name.startswith("engine-") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(log_dir, name), encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                kind = {"load": "loads", "score": "scores", "generate": "generate"}.get(rec.get("event"))
                if kind:
                    out[kind].append(rec)
    return out

"""A simulated engine and simulated reward functions: the real pipeline at cluster scale on a laptop.

:class:`SimEngine` has the interface of :class:`~rcs_ray.sampling.engines.HFEngine` (``tokenizer``,
``max_model_len``, ``generate(prompt_ids, seeds) -> list[list[Completion]]``) but loads no model: each call sleeps
``generated tokens / tokens_per_s`` and returns synthetic texts. Select it with the dotted-path extension point of
``sampling.engine``::

    sampling.engine=benchmarks.sim:SimEngine

(``policy.path`` must still name an existing directory; any will do). :func:`reward_a` and :func:`reward_b` are rule
rewards (``kind: rule``, ``function: benchmarks.sim:reward_a``) that sleep ``(prompt + response tokens) /
score_tokens_per_s`` and return deterministic, conflicting rewards (r_a ~ z + noise, r_b ~ -z + noise for a latent z
hashed from the response), so RC selection is meaningful and a few prompts fail; :func:`reward_c` is a third
objective, independent of both (r_c ~ z' + noise). :mod:`benchmarks.sim_rm` serves the same functions as a reward
*model* with a load time.

Everything is deterministic by the per-sample seed: the same seed gives the same text, length and rewards, whatever
the batching or the number of actors. Knobs (environment variables, read when an actor starts or a reward is
computed; on a local Ray the workers inherit the driver's environment, on a cluster pass them in the job's
``runtime_env``):

================================  ========  =========================================================
variable                          default   meaning
================================  ========  =========================================================
``RCS_SIM_TOKENS_PER_S``          5000      generated tokens per second of one engine (one actor)
``RCS_SIM_TOKENS_PER_CANDIDATE``  (unset)   centre of the length range; unset: 3/4 of ``max_tokens``
``RCS_SIM_LOAD_S``                0         seconds an engine takes to start (model load)
``RCS_SIM_RM_LOAD_S``             0         seconds a simulated reward model takes to load
                                            (:mod:`benchmarks.sim_rm`, ``kind: sim_rm``)
``RCS_SIM_MAX_MODEL_LEN``         2^20      the engine's context length (longer prompts fail)
``RCS_SIM_SCORE_TOKENS_PER_S``    100000    tokens/s of one simulated reward model (per objective)
``RCS_SIM_LOG_DIR``               (unset)   each engine appends one JSON line per call to a file there;
                                            every model load (engine or reward model) one line to
                                            ``events.ndjson`` there (:func:`log_event`)
``RCS_SIM_START_BARRIER``         0         with a log dir: engines wait (at most
                                            ``RCS_SIM_BARRIER_TIMEOUT_S``, 600) until this many have
                                            started, so all start at once as on a cluster
================================  ========  =========================================================

Candidate lengths are uniform in ``[centre/2, 3*centre/2]`` capped at ``sampling.max_tokens`` (by default
``[3/8, 1] * max_tokens``); a sample at the cap is ``finished=False``. The engine's time covers decoding only
(prefill and its batching effects are not modelled).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, Sequence

from rcs_ray.config import ModelConfig, SamplingConfig
from rcs_ray.sampling.engines import Completion

WORD = "lorem"  # filler: one word = one simulated token
NOISE = 0.15  # reward noise around the shared latent (smaller: more conflict, more failed prompts)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def log_event(record: dict) -> None:
    """Append ``record`` (with this process's pid) as one JSON line to ``$RCS_SIM_LOG_DIR/events.ndjson`` (nothing
    without a log dir): model loads, so a benchmark can count them per pool and sum their time. Not ``*.jsonl``:
    those are the engines' call logs, which ``scale_sim_probe.engine_timeline`` reads as generate calls."""
    log_dir = os.environ.get("RCS_SIM_LOG_DIR")
    if log_dir:
        line = json.dumps({**record, "pid": os.getpid()}) + "\n"
        with open(os.path.join(log_dir, "events.ndjson"), "a", encoding="utf-8") as fh:
            fh.write(line)  # one short append: lines of concurrent actors do not interleave


def simulate_load(pool: str, seconds: float, **extra) -> None:
    """Sleep ``seconds`` (a model load) and log it as ``{"event": "load", "pool": pool, "t0", "t1", ...}``."""
    t0 = time.time()
    if seconds > 0:
        time.sleep(seconds)
    log_event({"event": "load", "pool": pool, "t0": t0, "t1": time.time(), "load_s": seconds, **extra})


class SimTokenizer:
    """Whitespace "tokenizer": one token per word; no chat template (chat prompts are joined by role)."""

    chat_template = None
    pad_token = eos_token = "</s>"
    pad_token_id = eos_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = False, **_):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return text + ("\nassistant:" if add_generation_prompt else "")

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict:
        return {"input_ids": list(range(len(text.split())))}


def num_tokens(text: str) -> int:
    return len(text.split())


class _Pacer:
    """Sleeps so that a run of back-to-back charges takes their total time: short charges are pooled into sleeps
    of at least ``min_sleep``, and over-sleeping (or time spent computing) is paid back by the next charges."""

    def __init__(self, min_sleep: float = 0.005, idle: float = 0.05):
        self.until = 0.0
        self.min_sleep, self.idle = min_sleep, idle

    def charge(self, seconds: float) -> None:
        now = time.perf_counter()
        if now - self.until > self.idle:  # a new run of charges (the actor was idle in between)
            self.until = now
        self.until += seconds
        if self.until - now >= self.min_sleep:
            time.sleep(self.until - now)


def _unit(digest: bytes, i: int) -> float:
    """The i-th uniform (0, 1) number of a digest (4 bytes each)."""
    return (int.from_bytes(digest[4 * i : 4 * i + 4], "little") + 0.5) / 2**32


def _normal(digest: bytes, i: int) -> float:
    """A standard normal from two uniforms of the digest (Box-Muller)."""
    return math.sqrt(-2 * math.log(_unit(digest, i))) * math.cos(2 * math.pi * _unit(digest, i + 1))


class SimEngine:
    """A generation engine that costs time in proportion to the tokens it "generates" (see the module docstring)."""

    def __init__(self, model: ModelConfig, sampling: SamplingConfig):
        self.sampling = sampling
        self.tokenizer = SimTokenizer()
        self.max_model_len = int(_env_float("RCS_SIM_MAX_MODEL_LEN", 1 << 20))
        self.tokens_per_s = _env_float("RCS_SIM_TOKENS_PER_S", 5000.0)
        if self.tokens_per_s <= 0:
            raise ValueError(f"RCS_SIM_TOKENS_PER_S must be > 0, got {self.tokens_per_s}")
        mean = _env_float("RCS_SIM_TOKENS_PER_CANDIDATE", 0.75 * sampling.max_tokens)
        self.min_tokens = max(1, int(round(mean / 2)))
        self.max_tokens = max(self.min_tokens, min(sampling.max_tokens, int(round(1.5 * mean))))
        self.log_dir = os.environ.get("RCS_SIM_LOG_DIR") or None
        self.started = time.time()
        simulate_load("generate", _env_float("RCS_SIM_LOAD_S", 0.0))
        self._barrier(int(_env_float("RCS_SIM_START_BARRIER", 0)), _env_float("RCS_SIM_BARRIER_TIMEOUT_S", 600.0))
        self._log({"event": "ready", "t0": self.started, "t1": time.time()})

    def _barrier(self, count: int, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until ``count`` engines have written their start marker into the log dir."""
        if count <= 1 or not self.log_dir:
            return
        open(os.path.join(self.log_dir, f"started-{os.getpid()}"), "w").close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(name.startswith("started-") for name in os.listdir(self.log_dir)) >= count:
                return
            time.sleep(0.05)

    def _log(self, record: dict) -> None:
        if self.log_dir:
            record["pid"] = os.getpid()
            with open(os.path.join(self.log_dir, f"engine-{os.getpid()}.jsonl"), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def sample(self, seed: int) -> Completion:
        """The completion of one seed: a length uniform in [min_tokens, max_tokens] and a text of that many words."""
        digest = hashlib.sha256(f"sim\x1f{seed}".encode()).digest()
        length = self.min_tokens + int(_unit(digest, 0) * (self.max_tokens - self.min_tokens + 1))
        length = min(length, self.max_tokens)
        text = f"sim-{int(seed):010d} " + " ".join([WORD] * (length - 1)) if length > 1 else f"sim-{int(seed):010d}"
        return Completion(text=text, num_tokens=length, finished=length < self.sampling.max_tokens)

    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[Sequence[int]]) -> list[list[Completion]]:
        t0 = time.time()
        out = [[self.sample(s) for s in row_seeds] for row_seeds in seeds]
        tokens = sum(c.num_tokens for group in out for c in group)
        busy = tokens / self.tokens_per_s
        time.sleep(max(0.0, busy - (time.time() - t0)))
        self._log(
            {
                "event": "generate",
                "t0": t0,
                "t1": time.time(),
                "busy": busy,
                "tokens": tokens,
                "candidates": sum(len(g) for g in out),
                "prompts": len(prompts),
            }
        )
        return out


_PACER = _Pacer()


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " ".join(str(m.get("content", "")) for m in prompt)
    return str(prompt)


def _score_cost(prompt: Any, response: str) -> None:
    rate = _env_float("RCS_SIM_SCORE_TOKENS_PER_S", 100000.0)
    if rate > 0:
        _PACER.charge((num_tokens(_prompt_text(prompt)) + num_tokens(response)) / rate)


def latent(response: str) -> tuple[float, float, float]:
    """(z, e_a, e_b): standard normals hashed from the response text."""
    digest = hashlib.sha256(response.encode("utf-8")).digest()
    return _normal(digest, 0), _normal(digest, 2), _normal(digest, 4)


def reward_a(prompt: Any, response: str) -> float:
    """Objective a: z + NOISE * e_a (costs the time of one reward-model forward over prompt + response)."""
    _score_cost(prompt, response)
    z, e_a, _ = latent(response)
    return z + NOISE * e_a


def reward_b(prompt: Any, response: str) -> float:
    """Objective b, in conflict with a: -z + NOISE * e_b (same cost as :func:`reward_a`)."""
    _score_cost(prompt, response)
    z, _, e_b = latent(response)
    return -z + NOISE * e_b


def reward_c(prompt: Any, response: str) -> float:
    """Objective c, independent of a and b: z' + NOISE * e_c (same cost as :func:`reward_a`)."""
    _score_cost(prompt, response)
    digest = hashlib.sha256(b"c\x1f" + response.encode("utf-8")).digest()
    return _normal(digest, 0) + NOISE * _normal(digest, 2)

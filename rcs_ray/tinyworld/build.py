"""Build (and cache) the tiny world: tokenizer, pretrained policy, multi-head reward model, stage datasets.

``ensure_world(cfg)`` returns the :class:`WorldPaths` of the world for ``cfg``, building it on first use. Two cache
entries under ``cache_dir``, each keyed by a short hash of :data:`WORLD_VERSION` and the config fields it depends on:

    models-<key>/                    (seed, conflict, eval_prompts, pretrain_examples, rm_examples)
        tokenizer/                   BPE (ByteLevel) + chat template; also saved inside policy/ and reward_model/
        policy/                      LlamaForCausalLM (hidden 128, 2 layers, 4 heads of 32); loads alone (HF, vLLM)
        reward_model/                LlamaForSequenceClassification, 3 regression heads = objectives
        models.json                  training stats, seconds
    world-<key>/                     (all fields but cache_dir)
        world.json                   config, version, seconds per part, corpus / policy-sample stats, conflict
        data/stage1_harmless.jsonl   ... one per objective: prompt_id, prompt, chosen, rejected, *_scores
        data/eval_prompts.jsonl      prompt_id, prompt

Each entry is built in a temporary directory renamed into place at the end, under a file lock: a crash leaves no
half-built entry and two processes never build the same entry at once. Same config -> same tokenizer, same data
files byte for byte, same weights (on the same torch build and thread count; CPU float sums depend on both).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import List, Optional, Sequence, Tuple

from rcs_ray.config import TinyWorldConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.tinyworld import world as W
from rcs_ray.tinyworld.generate import CHAT_TEMPLATE, build_tokenizer, save_tokenizer
from rcs_ray.tinyworld.models import MODEL_SHAPE, pretrain_policy, train_reward_model
from rcs_ray.tinyworld.rewards import OBJECTIVES, reward_names

WORLD_VERSION = "2"  # bump when the models (or everything) change
DATA_VERSION = "2"  # bump when only the datasets or world.json change (the models are kept)
RESOLVABLE = ("policy", "reward_model", "tokenizer", "data", "data/<file>", "root")
# The config fields the models depend on; the others (reward_scale, pairs_per_stage) only change the datasets.
MODEL_FIELDS = ("seed", "conflict", "eval_prompts", "pretrain_examples", "rm_examples")


@dataclass(frozen=True)
class WorldPaths:
    """Absolute paths of a built world's parts. The models live in ``models`` (shared by the worlds that differ
    only in their datasets); ``root`` holds world.json and ``data/``."""

    root: str
    models: str
    tokenizer: str
    policy: str
    reward_model: str
    data_dir: str
    stage_files: Tuple[str, ...]
    eval_prompts: str
    info: str
    objectives: Tuple[str, ...] = OBJECTIVES


def stage_file_names() -> List[str]:
    """``stage{k}_{objective}.jsonl`` for k = 1..K, in stage order."""
    return [f"stage{k + 1}_{name}.jsonl" for k, name in enumerate(OBJECTIVES)]


def _check(cfg: TinyWorldConfig) -> None:
    n_max = len(W.all_prompts()) // 2
    for ok, msg in [
        (0.0 <= cfg.conflict <= 1.0, f"conflict must be in [0, 1], got {cfg.conflict}"),
        (
            cfg.reward_scale in ("integer", "fine"),
            f"reward_scale must be 'integer' or 'fine', got {cfg.reward_scale!r}",
        ),
        (cfg.pairs_per_stage >= 1, f"pairs_per_stage must be >= 1, got {cfg.pairs_per_stage}"),
        (64 <= cfg.eval_prompts <= n_max, f"eval_prompts must be in [64, {n_max}], got {cfg.eval_prompts}"),
        (cfg.pretrain_examples >= 1024, f"pretrain_examples must be >= 1024, got {cfg.pretrain_examples}"),
        (cfg.rm_examples >= 1024, f"rm_examples must be >= 1024, got {cfg.rm_examples}"),
    ]:
        if not ok:
            raise RcsInputError(f"tinyworld.{msg}")


def _key(cfg: TinyWorldConfig, fields: Optional[Sequence[str]], **versions) -> str:
    """Short hash of the versions and the named config fields (None: all but ``cache_dir``)."""
    values = {k: v for k, v in asdict(cfg).items() if k != "cache_dir" and (fields is None or k in fields)}
    blob = json.dumps({"version": WORLD_VERSION, **versions, **values}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def world_key(cfg: TinyWorldConfig) -> str:
    """Key of the world (every build-relevant field): worlds with the same key are identical."""
    return _key(cfg, None, data_version=DATA_VERSION)


def models_key(cfg: TinyWorldConfig) -> str:
    """Key of the models (tokenizer, policy, reward model): they do not depend on the datasets' fields."""
    return _key(cfg, MODEL_FIELDS)


def _cache(cfg: TinyWorldConfig) -> str:
    return os.path.abspath(os.path.expanduser(cfg.cache_dir))


def world_root(cfg: TinyWorldConfig) -> str:
    """Absolute root directory of the world for ``cfg`` (relative ``cache_dir`` is taken from the current dir)."""
    return os.path.join(_cache(cfg), f"world-{world_key(cfg)}")


def world_paths(cfg: TinyWorldConfig) -> WorldPaths:
    """The :class:`WorldPaths` of the world for ``cfg`` (nothing is checked or built)."""
    root, models = world_root(cfg), os.path.join(_cache(cfg), f"models-{models_key(cfg)}")
    data = os.path.join(root, "data")
    return WorldPaths(
        root=root,
        models=models,
        tokenizer=os.path.join(models, "tokenizer"),
        policy=os.path.join(models, "policy"),
        reward_model=os.path.join(models, "reward_model"),
        data_dir=data,
        stage_files=tuple(os.path.join(data, f) for f in stage_file_names()),
        eval_prompts=os.path.join(data, "eval_prompts.jsonl"),
        info=os.path.join(root, "world.json"),
    )


# ----------------------------------------------------------------------------------------------- the build
def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[tinyworld] {msg}", file=sys.stderr, flush=True)


def _timed(seconds: dict, name: str, progress: bool, fn, *args):
    t = time.time()
    out = fn(*args)
    seconds[name] = round(time.time() - t, 2)
    _log(progress, f"{name}: done in {seconds[name]:.1f} s")
    return out


def _build_models(cfg: TinyWorldConfig, root: str, progress: bool) -> None:
    """Tokenizer, pretrained policy and reward model into ``root``; models.json (stats, seconds) last."""
    split = W.split_prompts(cfg.seed, len(OBJECTIVES), cfg.eval_prompts)
    train_prompts = [p for stage in split.stages for p in stage]  # the eval prompts stay unseen
    dirs = {k: os.path.join(root, k) for k in ("tokenizer", "policy", "reward_model")}
    seconds: dict = {}
    tok = _timed(seconds, "tokenizer", progress, build_tokenizer)
    save_tokenizer(tok, dirs["tokenizer"])
    pretrain = _timed(seconds, "policy", progress, pretrain_policy, tok, cfg, train_prompts, dirs["policy"], progress)
    rm = _timed(
        seconds,
        "reward_model",
        progress,
        train_reward_model,
        tok,
        cfg,
        train_prompts,
        dirs["policy"],
        dirs["reward_model"],
        progress,
    )
    info = {
        "version": WORLD_VERSION,
        "key": models_key(cfg),
        "tokenizer": {"vocab_size": len(tok), "chat_template": CHAT_TEMPLATE},
        "model_shape": MODEL_SHAPE,
        "pretrain": pretrain,
        "reward_model": rm,
        "seconds": seconds,
    }
    with open(os.path.join(root, "models.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)


def _build_world(cfg: TinyWorldConfig, root: str, progress: bool) -> None:
    """Datasets and measurements into ``root`` (the models must exist); world.json last."""
    from rcs_ray.tinyworld.generate import write_datasets
    from rcs_ray.tinyworld.measure import load_info, measure

    final = world_paths(cfg)
    paths = replace(final, root=root, data_dir=os.path.join(root, "data"), info=os.path.join(root, "world.json"))
    split = W.split_prompts(cfg.seed, len(OBJECTIVES), cfg.eval_prompts)
    models = load_info(os.path.join(final.models, "models.json"))
    seconds = dict(models.pop("seconds"))
    data = _timed(seconds, "datasets", progress, write_datasets, cfg, split, paths.data_dir, stage_file_names())
    measured = _timed(seconds, "measure", progress, measure, paths, cfg, split.eval)
    seconds["total"] = round(sum(seconds.values()), 2)
    info = {
        "version": WORLD_VERSION,
        "key": world_key(cfg),
        "models_key": models.pop("key"),
        "config": asdict(cfg),
        "objectives": list(OBJECTIVES),
        "reward_functions": {
            s: [f"rcs_ray.tinyworld.rewards:{n}" for n in reward_names(s)] for s in ("integer", "fine")
        },
        "prompts": {
            "total": len(W.all_prompts()),
            "eval": len(split.eval),
            "per_stage": [len(s) for s in split.stages],
        },
        "words": {
            "topics": len(W.TOPICS),
            "questions": len(W.QUESTIONS),
            "styles": len(W.STYLES),
            "help": len(W.HELP_WORDS),
            "harm": len(W.HARM_WORDS),
            "fillers": len(W.FILLERS),
        },
        **models,
        "datasets": data,
        "measure": measured,
        "seconds": seconds,
        "policy_conflict": _headline(measured),
    }
    with open(paths.info, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)


def _headline(measured: dict) -> dict:
    """Flat headline numbers of the initial policy's samples (for one-line displays)."""
    c = measured["conflict_policy"]
    return {
        "prompts": c["prompts"],
        "n": c["n"],
        **measured["policy_samples"]["mean"],
        "non_rc_on_harmless": c["integer"]["helpful_vs_harmless"]["non_rc"],
        "reversed_on_harmless": c["integer"]["helpful_vs_harmless"]["reversed"],
        "non_rc_on_harmless_fine": c["fine"]["helpful_vs_harmless"]["non_rc"],
    }


def _ensure_dir(root: str, marker: str, build, progress: bool) -> None:
    """Build ``root`` with ``build(tmp_dir)`` unless ``root/marker`` exists: under a file lock, in a temporary
    directory renamed into place at the end (a crash leaves no half-built directory)."""
    if os.path.isfile(os.path.join(root, marker)):
        return
    from filelock import FileLock

    os.makedirs(os.path.dirname(root), exist_ok=True)
    with FileLock(root + ".lock"):
        if os.path.isfile(os.path.join(root, marker)):
            return  # another process built it while we waited
        for stale in glob.glob(root + ".tmp-*"):  # left by a crashed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if os.path.isdir(root):  # no marker: not a finished build
            shutil.rmtree(root)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(root), prefix=os.path.basename(root) + ".tmp-")
        _log(progress, f"building {root} (once; cached afterwards)")
        try:
            build(tmp)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def ensure_world(cfg: Optional[TinyWorldConfig] = None, progress: bool = True) -> WorldPaths:
    """The world for ``cfg`` (default config when None): built on first use, then read from the cache.

    Two cache entries: ``models-<key>`` (tokenizer, policy, reward model; ~1 min on 2 cores) and ``world-<key>``
    (datasets, world.json; seconds), so worlds that differ only in ``reward_scale`` or ``pairs_per_stage`` share
    their models.

    Raises:
        RcsInputError: a config value out of range.
    """
    cfg = cfg or TinyWorldConfig()
    _check(cfg)
    paths = world_paths(cfg)
    if not (os.path.isfile(paths.info) and os.path.isfile(os.path.join(paths.models, "models.json"))):
        t = time.time()
        _ensure_dir(paths.models, "models.json", lambda d: _build_models(cfg, d, progress), progress)
        _ensure_dir(paths.root, "world.json", lambda d: _build_world(cfg, d, progress), progress)
        _log(progress, f"tiny world ready in {time.time() - t:.0f} s: {paths.root}")
    return paths


def resolve(path: str, cfg: Optional[TinyWorldConfig] = None, progress: bool = True) -> str:
    """Map ``tinyworld:<name>`` to a real path of the world for ``cfg`` (building it if needed).

    Names: ``policy``, ``reward_model``, ``tokenizer``, ``data`` (the dir), ``data/<file>`` (e.g.
    ``data/stage2_helpful.jsonl``, ``data/eval_prompts.jsonl``), ``root``. Any string not starting with
    ``tinyworld:`` is returned unchanged. Returned paths are absolute: resolve in the driver, before the paths
    travel to Ray workers whose working directory differs.

    Raises:
        RcsInputError: an unknown ``tinyworld:`` name (checked before anything is built).
    """
    if not isinstance(path, str) or not path.startswith("tinyworld:"):
        return path
    name = path[len("tinyworld:") :].strip("/")
    files = stage_file_names() + ["eval_prompts.jsonl"]
    if name.startswith("data/"):
        if name[len("data/") :] not in files:
            raise RcsInputError(
                f"unknown tiny-world data file {path!r}; files: " + ", ".join(f"tinyworld:data/{f}" for f in files)
            )
    elif name not in ("policy", "reward_model", "tokenizer", "data", "root"):
        raise RcsInputError(
            f"unknown tiny-world asset {path!r}; names: " + ", ".join(f"tinyworld:{n}" for n in RESOLVABLE)
        )
    paths = ensure_world(cfg, progress=progress)
    if name.startswith("data/"):
        return os.path.join(paths.data_dir, name[len("data/") :])
    return {
        "policy": paths.policy,
        "reward_model": paths.reward_model,
        "tokenizer": paths.tokenizer,
        "data": paths.data_dir,
        "root": paths.root,
    }[name]

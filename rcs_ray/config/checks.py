"""Checks of a loaded config that its types cannot express: choices, ranges, cross-references.

Every failure is an :class:`~rcs_ray.errors.RcsInputError` with one line naming the file and the key.
"""

from __future__ import annotations

import math
import re
from typing import List

from rcs_ray import registry, selection
from rcs_ray.config.schema import (ATTN_IMPLEMENTATIONS, CHAT_TEMPLATES, DATA_FORMATS, LR_SCHEDULERS, OUTPUTS,
                                   PRECISIONS, PRESETS, QUANTIZATIONS, RULE_TEMPLATE_ARGS, TRACKERS, DataConfig,
                                   ModelConfig, ObjectiveConfig, RunConfig, SamplingConfig, TrainConfig)
from rcs_ray.config.path_checks import validate_data_source, validate_model_paths
from rcs_ray.config.stages import stage_objectives, stage_train
from rcs_ray.errors import RcsInputError


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, msg: str):
        raise RcsInputError(f"{self.source}: key '{key}': {msg}")

    def choice(self, key: str, value, choices):
        if value not in choices:
            self.fail(key, f"{value!r} is not one of {list(choices)}")

    def at_least(self, key: str, value, low):
        if value is None or value < low:
            self.fail(key, f"must be >= {low}, got {value}")

    def finite(self, key: str, value):
        if value is None or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Check values the schema's types cannot: choices, ranges, cross-references. Raises RcsInputError."""
    c = _Checker(source)
    names = cfg.objective_names
    if len(set(names)) != len(names):
        c.fail("objectives", f"objective names must be unique, got {names}")
    for i, obj in enumerate(cfg.objectives):
        _validate_objective(c, f"objectives.{i}", obj)
    _validate_shared_models(c, cfg.objectives)
    for i, obj in enumerate(cfg.objectives):
        _validate_resources(c, f"objectives.{i}.resources", obj.resources)
    for i, stage in enumerate(cfg.stages):
        key = f"stages.{i}"
        if stage.objective not in names:
            c.fail(f"{key}.objective", f"{stage.objective!r} is not an objective; objectives are {names}")
        _validate_data(c, f"{key}.data", stage.data)
        for j, extra in enumerate(stage.mix):
            _validate_data(c, f"{key}.mix.{j}", extra)
            if not extra.path:
                c.fail(f"{key}.mix.{j}.path", "a mixed-in dataset needs a path")
        if stage.mix:
            if stage.sample:
                c.fail(f"{key}.mix", "mixing datasets trains on them as they are: set sample: false for this stage")
            loss = (stage.train or {}).get("loss", cfg.train.loss)
            if loss != "dpo":
                c.fail(f"{key}.mix", f"a mixed stage trains with loss dpo (its pairs have different targets), "
                                     f"got {loss!r}")
        _validate_rc(c, f"{key}.rc", stage.rc, names)
    for i, obj in enumerate(cfg.objectives):
        _validate_from_stage(c, f"objectives.{i}", obj, cfg)
    s = cfg.sampling
    if not registry.is_engine_name(s.engine):
        c.fail("sampling.engine", f"{s.engine!r} is not one of {list(registry.ENGINES)} nor a custom engine "
                                  f"'package.module:ClassName'")
    c.at_least("sampling.n", s.n, 1)
    c.at_least("sampling.temperature", s.temperature, 0.0)
    if not 0 < s.top_p <= 1:
        c.fail("sampling.top_p", f"must be in (0, 1], got {s.top_p}")
    _validate_sampling_controls(c, s)
    c.at_least("sampling.max_tokens", s.max_tokens, 1)
    c.at_least("sampling.batch_size", s.batch_size, 1)
    c.at_least("sampling.num_actors", s.num_actors, 1)
    c.at_least("sampling.max_concurrent_batches", s.max_concurrent_batches, 1)
    c.at_least("sampling.num_gpus", s.num_gpus, 0)
    c.at_least("sampling.tensor_parallel_size", s.tensor_parallel_size, 1)
    c.choice("sampling.placement_strategy", s.placement_strategy, ("STRICT_PACK", "PACK", "SPREAD"))
    if s.tensor_parallel_size > 1 and not s.num_gpus > 0:
        c.fail("sampling.tensor_parallel_size", f"{s.tensor_parallel_size} needs GPUs: set sampling.num_gpus "
                                                "(GPUs per tensor-parallel worker, usually 1)")
    _validate_resources(c, "sampling.resources", s.resources)
    if s.adaptive.enabled:
        c.at_least("sampling.adaptive.n_max", s.adaptive.n_max, s.n)
        c.at_least("sampling.adaptive.rounds", s.adaptive.rounds, 1)
    _validate_policy(c, cfg.policy)
    validate_model_paths(c, cfg)
    if cfg.tracking.wandb_mode is not None:                 # None: $WANDB_MODE, else offline (rcs_ray.tracking)
        c.choice("tracking.wandb_mode", cfg.tracking.wandb_mode, ("offline", "online", "disabled"))
    _validate_train(c, "train", cfg.train, names)
    for i, stage in enumerate(cfg.stages):
        if stage.train:
            try:
                merged = stage_train(cfg, i)
            except RcsInputError as exc:
                raise RcsInputError(f"{source}: {exc}") from None
            _validate_train(c, f"stages.{i}.train", merged, names)
    _validate_data(c, "eval.prompts", cfg.eval.prompts)
    if cfg.eval.judge is not None:
        _validate_objective(c, "eval.judge", cfg.eval.judge)
        if cfg.eval.judge.name in names:
            c.fail("eval.judge.name", f"{cfg.eval.judge.name!r} is an objective's name; the judge needs its own")
    c.at_least("eval.n", cfg.eval.n, 1)
    for name, value in cfg.eval.thresholds.items():
        if name not in names:
            c.fail(f"eval.thresholds.{name}", f"not an objective; objectives are {names}")
        c.finite(f"eval.thresholds.{name}", value)
    w = cfg.tinyworld
    if not 0 <= w.conflict <= 1:
        c.fail("tinyworld.conflict", f"must be in [0, 1], got {w.conflict}")
    c.choice("tinyworld.reward_scale", w.reward_scale, ("integer", "fine"))
    c.at_least("tinyworld.pairs_per_stage", w.pairs_per_stage, 1)


def _validate_rc(c: _Checker, key: str, sel, names: List[str]) -> None:
    c.choice(f"{key}.strategy", sel.strategy, list(selection.STRATEGIES))
    c.finite(f"{key}.margin", sel.margin)
    for name in sel.enforce or []:
        if name not in names:
            c.fail(f"{key}.enforce", f"{name!r} is not an objective; objectives are {names}")
    if sel.weights is not None and len(sel.weights) != len(names):
        c.fail(f"{key}.weights", f"needs {len(names)} weights (one per objective), got {len(sel.weights)}")
    if not (math.isfinite(sel.rs_tau) and sel.rs_tau > 0):
        c.fail(f"{key}.rs_tau", f"must be a positive number, got {sel.rs_tau}")
    if not 0.5 <= sel.rs_eta < 1:
        c.fail(f"{key}.rs_eta", f"must be in [0.5, 1) (below 0.5 a pair could lose on the target), got {sel.rs_eta}")


def _validate_sampling_controls(c: _Checker, s: SamplingConfig) -> None:
    """top_k, min_p, repetition_penalty and stop strings, with vLLM's meaning (the HF engine gives them the same)."""
    if s.top_k < 0:
        c.fail("sampling.top_k", f"must be >= 0 (0: off), got {s.top_k}")
    if not 0 <= s.min_p <= 1:
        c.fail("sampling.min_p", f"must be in [0, 1] (0: off), got {s.min_p}")
    if not (math.isfinite(s.repetition_penalty) and s.repetition_penalty > 0):
        c.fail("sampling.repetition_penalty", f"must be a finite number > 0 (1: off), got {s.repetition_penalty}")
    for i, text in enumerate(s.stop):
        if not text:
            c.fail(f"sampling.stop.{i}", "an empty stop string would end every response before its first token")
    c.choice("sampling.truncated", s.truncated, selection.TRUNCATION_RULES)


def _validate_policy(c: _Checker, p: ModelConfig) -> None:
    if p.attn_implementation is not None:
        c.choice("policy.attn_implementation", p.attn_implementation, ATTN_IMPLEMENTATIONS)
    if p.system_prompt is not None and not p.chat_template:
        c.fail("policy.system_prompt", "a system prompt is a chat message: it needs policy.chat_template=true "
                                       "(plain prompts then become a system and a user message)")
    for name in p.chat_template_kwargs:
        if name in ("system", "system_prompt", "system_message"):
            c.fail(f"policy.chat_template_kwargs.{name}", "set policy.system_prompt instead: it becomes the system "
                                                          "message of every prompt (templates ignore this variable)")
        if name in RULE_TEMPLATE_ARGS:
            c.fail(f"policy.chat_template_kwargs.{name}", "is set by the prompt rule itself; chat_template_kwargs "
                                                          "holds the template's own variables (e.g. enable_thinking)")


def _validate_objective(c: _Checker, key: str, obj: ObjectiveConfig) -> None:
    """An objective against its reward source's registry entry: the fields it requires, the engines it runs on."""
    c.choice(f"{key}.kind", obj.kind, list(registry.REWARD_SOURCES))
    c.choice(f"{key}.engine", obj.engine, list(registry.ENGINES))
    source = registry.REWARD_SOURCES[obj.kind]
    if source.loads_model and obj.engine not in source.scorers:
        c.fail(f"{key}.engine", f"{obj.engine!r}: a {obj.kind} objective runs on {sorted(source.scorers)}")
    c.finite(f"{key}.sign", obj.sign)
    if obj.sign == 0:
        c.fail(f"{key}.sign", "must be non-zero")
    c.at_least(f"{key}.head", obj.head, 0)
    c.at_least(f"{key}.batch_size", obj.batch_size, 1)
    c.at_least(f"{key}.num_actors", obj.num_actors, 1)
    derived = ("model", "reference") if obj.kind == "implicit" and obj.from_stage is not None else ()
    for name in derived:
        if getattr(obj, name):
            c.fail(f"{key}.{name}", f"from_stage {obj.from_stage} takes the model from the workflow's own policies: "
                                    f"set one or the other")
    for name in source.requires:
        if name not in derived and not getattr(obj, name):
            c.fail(f"{key}.{name}", f"a {obj.kind} objective needs {_WHAT[name]}")
    if obj.kind == "rule" and not registry.DOTTED.fullmatch(obj.function):
        c.fail(f"{key}.function", f"a rule objective needs 'package.module:function', got {obj.function!r}")
    if obj.beta is not None and not obj.beta > 0:
        c.fail(f"{key}.beta", f"must be > 0, got {obj.beta}")
    if obj.from_stage is not None and obj.kind != "implicit":
        c.fail(f"{key}.from_stage", "only an implicit objective takes its models from a stage")
    c.choice(f"{key}.output", obj.output, OUTPUTS)
    if not source.loads_model:
        return
    if obj.engine == "vllm" and obj.kind in ("classifier", "multi_head") and obj.output not in ("auto", "logits"):
        c.fail(f"{key}.output", f"{obj.output!r}: vLLM's pooling runner reads classifier logits only; use engine hf")
    c.choice(f"{key}.dtype", obj.dtype, DTYPES)
    if obj.chat_template not in CHAT_TEMPLATES and not ("{{" in obj.chat_template or "{%" in obj.chat_template):
        c.fail(f"{key}.chat_template", f"{obj.chat_template!r} is not one of {list(CHAT_TEMPLATES)} nor a Jinja "
                                       f"template")
    if obj.max_length is not None:
        c.at_least(f"{key}.max_length", obj.max_length, 2)
    if obj.kind == "judge":
        _validate_judge(c, f"{key}.judge", obj)


DTYPES = ("float32", "bfloat16", "float16")
_LOADING = ("dtype", "trust_remote_code", "tokenizer", "chat_template", "max_length", "model_kwargs", "engine_kwargs")


def _validate_from_stage(c: _Checker, key: str, obj: ObjectiveConfig, cfg: RunConfig) -> None:
    """``from_stage: j`` names a stage, and every sampled stage that scores the objective comes after it."""
    j = obj.from_stage
    if j is None:
        return
    if not 1 <= j <= len(cfg.stages):
        c.fail(f"{key}.from_stage", f"{j} is not a stage (1..{len(cfg.stages)})")
    for k, st in enumerate(cfg.stages):
        if st.sample and obj.name in [o.name for o in stage_objectives(cfg, k)] and k + 1 <= j:
            c.fail(f"{key}.from_stage", f"stage {k + 1} scores {obj.name!r} but stage {j}'s policy does not exist "
                                        f"yet then: from_stage must be an earlier stage")


def _validate_judge(c: _Checker, key: str, obj: ObjectiveConfig) -> None:
    j = obj.judge
    c.choice(f"{key}.mode", j.mode, ("expected", "parse"))
    for field in ("{response}",):
        if field not in j.template:
            c.fail(f"{key}.template", f"needs a {field} placeholder (and usually {{prompt}})")
    try:
        j.template.format(prompt="", response="")
    except (KeyError, IndexError, ValueError) as exc:
        c.fail(f"{key}.template", f"only {{prompt}} and {{response}} may be placeholders ({exc}); write other braces "
                                  f"as {{{{ }}}}")
    if j.mode == "expected" and not j.scores:
        c.fail(f"{key}.scores", "needs at least one score label")
    for v in j.scores:
        c.finite(f"{key}.scores", v)
    if j.mode == "parse":
        c.at_least(f"{key}.max_tokens", j.max_tokens, 1)
        try:
            re.compile(j.pattern)
        except re.error as exc:
            c.fail(f"{key}.pattern", f"not a regular expression: {exc}")


def _validate_shared_models(c: _Checker, objectives) -> None:
    """Objectives that share a model are served by one forward pass: they load it the same way."""
    first: dict = {}
    for i, obj in enumerate(objectives):
        source = registry.REWARD_SOURCES.get(obj.kind)
        if source is None or not source.loads_model:
            continue
        group = (source.family, *(getattr(obj, f) for f in source.shared_by))
        if group not in first:
            first[group] = (i, obj)
            continue
        j, other = first[group]
        for name in _LOADING:
            if getattr(obj, name) != getattr(other, name):
                c.fail(f"objectives.{i}.{name}", f"objectives {j} and {i} share {obj.model} (one forward pass serves "
                                                 f"both) but differ in {name}: set the same")


_WHAT = {"function": "'package.module:function'", "model": "a model path", "reference": "a reference model path"}


def _validate_train(c: _Checker, key_prefix: str, t: TrainConfig, names: List[str]) -> None:
    c.choice(f"{key_prefix}.loss", t.loss, list(registry.LOSSES))
    c.choice(f"{key_prefix}.precision", t.precision, PRECISIONS)
    c.choice(f"{key_prefix}.zero_stage", t.zero_stage, (0, 1, 2, 3))
    if not t.beta > 0:
        c.fail(f"{key_prefix}.beta", f"must be > 0, got {t.beta}")
    if not t.learning_rate > 0:
        c.fail(f"{key_prefix}.learning_rate", f"must be > 0, got {t.learning_rate}")
    for key in ("num_epochs", "batch_size", "gradient_accumulation_steps", "num_workers", "max_length"):
        c.at_least(f"{key_prefix}.{key}", getattr(t, key), 1)
    if t.max_steps is not None:
        c.at_least(f"{key_prefix}.max_steps", t.max_steps, 1)
    if t.modpo_weights is not None and len(t.modpo_weights) != len(names):
        c.fail(f"{key_prefix}.modpo_weights",
               f"needs {len(names)} weights (one per objective), got {len(t.modpo_weights)}")
    c.at_least(f"{key_prefix}.max_grad_norm", t.max_grad_norm, 0.0)
    if t.backend is not None:
        c.choice(f"{key_prefix}.backend", t.backend, ("nccl", "gloo"))
    _validate_resources(c, f"{key_prefix}.resources_per_worker", t.resources_per_worker)
    for key in ("warmup_steps", "max_failures"):
        c.at_least(f"{key_prefix}.{key}", getattr(t, key), 0)
    for key in ("log_steps", "ref_batch_size", "ref_num_actors"):
        c.at_least(f"{key_prefix}.{key}", getattr(t, key), 1)
    for key in ("save_steps", "keep_checkpoints"):
        if getattr(t, key) is not None:
            c.at_least(f"{key_prefix}.{key}", getattr(t, key), 1)
    if t.offload_optimizer and t.zero_stage == 0:
        c.fail(f"{key_prefix}.offload_optimizer",
               "needs train.zero_stage >= 1 (DeepSpeed offloads ZeRO optimizer states)")
    c.choice(f"{key_prefix}.spo_reward_source", t.spo_reward_source, ("implicit", "recorded"))
    c.choice(f"{key_prefix}.on_suspicious_data", t.on_suspicious_data, ("warn", "error"))
    for a in t.spo_alphas or []:
        if not (math.isfinite(a) and a >= 0):
            c.fail(f"{key_prefix}.spo_alphas", f"must be finite and >= 0, got {t.spo_alphas}")
    c.choice(f"{key_prefix}.lr_scheduler", t.lr_scheduler, LR_SCHEDULERS)
    c.at_least(f"{key_prefix}.weight_decay", t.weight_decay, 0.0)
    c.finite(f"{key_prefix}.weight_decay", t.weight_decay)
    for name in t.report_to:
        c.choice(f"{key_prefix}.report_to", name, TRACKERS)
    _validate_lora(c, f"{key_prefix}.lora", t)


def _validate_lora(c: _Checker, key: str, t: TrainConfig) -> None:
    lora = t.lora
    c.at_least(f"{key}.r", lora.r, 0)
    if not lora.alpha > 0:
        c.fail(f"{key}.alpha", f"must be > 0, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        c.fail(f"{key}.dropout", f"must be in [0, 1), got {lora.dropout}")
    if lora.target_modules is not None and not lora.target_modules:
        c.fail(f"{key}.target_modules", "an empty list adapts nothing: name modules, or leave it unset (every "
                                        "linear layer)")
    if lora.quantization is not None:
        c.choice(f"{key}.quantization", lora.quantization, QUANTIZATIONS)
        if not lora.r:
            c.fail(f"{key}.quantization", "QLoRA quantizes the frozen base under LoRA adapters: set train.lora.r")
        if not t.use_gpu:
            c.fail(f"{key}.quantization", "QLoRA (bitsandbytes) needs CUDA GPUs: set train.use_gpu=true, or drop it")
        if t.zero_stage == 3:
            c.fail(f"{key}.quantization", "QLoRA cannot be sharded by ZeRO-3: use train.zero_stage <= 2")


def _validate_data(c: _Checker, key: str, data: DataConfig) -> None:
    c.choice(f"{key}.format", data.format, DATA_FORMATS)
    validate_data_source(c, key, data)
    if data.preset is not None:
        c.choice(f"{key}.preset", data.preset, PRESETS)
    c.choice(f"{key}.on_bad_row", data.on_bad_row, ("error", "skip"))
    if data.limit is not None:
        c.at_least(f"{key}.limit", data.limit, 1)


def _validate_resources(c: _Checker, key: str, resources) -> None:
    """Custom Ray resources: names other than CPU / GPU (those have their own keys), amounts >= 0."""
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU", "memory"):
            c.fail(f"{key}.{name}", "set CPUs / GPUs with num_cpus / num_gpus, not as a custom resource")
        c.at_least(f"{key}.{name}", amount, 0.0)

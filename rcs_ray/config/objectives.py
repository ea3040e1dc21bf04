"""An objective's config (``objectives.N``, ``eval.judge``): its name and the source of its reward r_k(x, y).

The kinds a reward source may take come from :data:`rcs_ray.registry.REWARD_SOURCES`, so a registered source is
accepted here; the scorers that read this config are in :mod:`rcs_ray.sampling.scorers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from rcs_ray import registry
from rcs_ray.config.fields import Checker, doc_field

OBJECTIVE_KINDS = tuple(registry.REWARD_SOURCES)
OUTPUTS = ("auto", "logits", "rewards", "score", "end_scores")
CHAT_TEMPLATES = ("auto", "own", "policy", "none")  # or a Jinja template
DTYPES = ("float32", "bfloat16", "float16")
_WHAT = {"function": "'package.module:function'", "model": "a model path", "reference": "a reference model path"}


@dataclass
class JudgeConfig:
    """An LLM-as-judge reward (``kind: judge``): the judge reads ``template`` and answers with a score."""

    template: str = doc_field(
        (
            "Rate how well the response answers the request, from 1 (worst) to 10 (best).\n\n"
            "Request: {prompt}\n\nResponse: {response}\n\nAnswer with the number only. Score:"
        ),
        "The judge's prompt: {prompt} and {response} are filled in (other braces as {{ }}).",
    )
    mode: str = doc_field(
        "expected", "expected: sum_s s * P(s) over the score tokens | parse: the score read from the judge's text."
    )
    scores: List[float] = doc_field(
        factory=lambda: [float(i) for i in range(1, 11)],
        doc="expected: the score labels whose next-token probabilities are averaged.",
    )
    pattern: str = doc_field(
        r"(-?\d+(?:\.\d+)?)", "parse: a regular expression; the first match's group 1 is the score."
    )
    max_tokens: int = doc_field(16, "parse: tokens the judge may write.")

    def check(self, c: Checker, key: str) -> None:
        """The mode, the template's placeholders, the score labels or the pattern.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        c.choice(f"{key}.mode", self.mode, ("expected", "parse"))
        for placeholder in ("{response}",):
            if placeholder not in self.template:
                c.fail(f"{key}.template", f"needs a {placeholder} placeholder (and usually {{prompt}})")
        try:
            self.template.format(prompt="", response="")
        except (KeyError, IndexError, ValueError) as exc:
            c.fail(
                f"{key}.template",
                f"only {{prompt}} and {{response}} may be placeholders ({exc}); write other braces as {{{{ }}}}",
            )
        if self.mode == "expected" and not self.scores:
            c.fail(f"{key}.scores", "needs at least one score label")
        for v in self.scores:
            c.finite(f"{key}.scores", v)
        if self.mode == "parse":
            c.at_least(f"{key}.max_tokens", self.max_tokens, 1)
            try:
                re.compile(self.pattern)
            except re.error as exc:
                c.fail(f"{key}.pattern", f"not a regular expression: {exc}")


@dataclass
class ObjectiveConfig:
    """One objective k and the source of its reward r_k(x, y).

    A model-based source (``classifier``, ``multi_head``, ``implicit``, ``judge``) loads with its own settings, not
    the policy's: ``trust_remote_code``, ``dtype``, ``max_length``, ``chat_template``, ``model_kwargs`` (extra
    ``from_pretrained`` arguments), ``engine_kwargs`` (extra ``vllm.LLM`` arguments). ``output`` says what the
    reward model's forward pass is read from (see :mod:`rcs_ray.modeling.reward_models`).
    """

    name: str = doc_field(
        MISSING, "The objective's name (required, unique): stages, rc.enforce and eval.thresholds name it."
    )
    kind: str = doc_field(
        "rule",
        "The reward source: rule | classifier | multi_head | implicit | judge, or any kind "
        "in rcs_ray.registry.REWARD_SOURCES.",
    )
    function: Optional[str] = doc_field(None, 'rule: "package.module:function"(prompt, response) -> float.')
    model: Optional[str] = doc_field(None, "A reward model, the aligned policy (implicit) or the judge; dir or Hub ID.")
    reference: Optional[str] = doc_field(None, "implicit: the reference policy.")
    tokenizer: Optional[str] = doc_field(None, "The tokenizer's directory or ID; None: the model's.")
    output: str = doc_field("auto", "What the forward pass is read from: auto | logits | rewards | score | end_scores.")
    head: int = doc_field(0, "Index into the output (a label, an objective of a multi-objective RM).")
    sign: float = doc_field(1.0, 'reward = sign * output (e.g. -1 for a "cost" model).')
    beta: Optional[float] = doc_field(
        None,
        "implicit: reward = beta * (log pi - log pi_ref); None: 0.1, or with from_stage the beta stage j trained with.",
    )
    from_stage: Optional[int] = doc_field(
        None,
        "implicit: r_j = beta_j * log(pi_j / pi_{j-1}) from the workflow's "
        "own policies before and after stage j (1-based): no model paths "
        "needed.",
    )
    engine: str = doc_field("hf", "hf | vllm (vLLM pooling runner; judge: generation).")
    dtype: str = doc_field("float32", "The model's dtype: float32 | bfloat16 | float16.")
    trust_remote_code: bool = doc_field(False, "Load custom model code shipped with the model (e.g. ArmoRM).")
    max_length: Optional[int] = doc_field(
        None, "Tokens of prompt + response read (longer: cut from the left); None: the model's limit."
    )
    chat_template: str = doc_field(
        "auto", "How prompt and response are rendered for the model: auto | own | policy | none | a Jinja template."
    )
    model_kwargs: Dict[str, Any] = doc_field(factory=dict, doc="Extra from_pretrained keyword arguments.")
    engine_kwargs: Dict[str, Any] = doc_field(factory=dict, doc="Extra vllm.LLM keyword arguments.")
    judge: JudgeConfig = doc_field(
        factory=JudgeConfig, doc="kind: judge: the judge's prompt and how its answer becomes a score."
    )
    batch_size: int = doc_field(16, "Prompt-response sequences per forward pass of the model.")
    num_actors: int = doc_field(1, "Scorer actor-pool size.")
    num_gpus: float = doc_field(0.0, "GPUs per scorer actor.")
    num_cpus: float = doc_field(1.0, "CPUs per scorer actor.")
    resources: Dict[str, float] = doc_field(factory=dict, doc="Custom Ray resources per scorer actor.")

    def check(self, c: Checker, key: str) -> None:
        """The objective against its reward source's registry entry: the fields it requires, the engines it runs on,
        then the settings a model-based source loads with.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        c.choice(f"{key}.kind", self.kind, list(registry.REWARD_SOURCES))
        c.choice(f"{key}.engine", self.engine, list(registry.ENGINES))
        source = registry.REWARD_SOURCES[self.kind]
        if source.loads_model and self.engine not in source.scorers:
            c.fail(f"{key}.engine", f"{self.engine!r}: a {self.kind} objective runs on {sorted(source.scorers)}")
        c.finite(f"{key}.sign", self.sign)
        if self.sign == 0:
            c.fail(f"{key}.sign", "must be non-zero")
        c.at_least(f"{key}.head", self.head, 0)
        c.at_least(f"{key}.batch_size", self.batch_size, 1)
        c.at_least(f"{key}.num_actors", self.num_actors, 1)
        self._check_requires(c, key, source)
        if self.beta is not None and not self.beta > 0:
            c.fail(f"{key}.beta", f"must be > 0, got {self.beta}")
        if self.from_stage is not None and not source.from_stage:
            c.fail(f"{key}.from_stage", f"only {_from_stage_kinds()} objective takes its models from a stage")
        c.choice(f"{key}.output", self.output, OUTPUTS)
        check_config = source.hook("check_config")
        if check_config is not None:
            check_config(self, c, key)
        if source.loads_model:
            self._check_loading(c, key)

    def _check_requires(self, c: Checker, key: str, source) -> None:
        """The fields the source requires are set, except those ``from_stage`` fills (which must then be unset)."""
        derived = source.from_stage if self.from_stage is not None else ()
        for name in derived:
            if getattr(self, name):
                c.fail(
                    f"{key}.{name}",
                    f"from_stage {self.from_stage} takes the model from the workflow's own "
                    f"policies: set one or the other",
                )
        for name in source.requires:
            if name not in derived and not getattr(self, name):
                c.fail(f"{key}.{name}", f"a {self.kind} objective needs {_WHAT.get(name, name)}")

    def _check_loading(self, c: Checker, key: str) -> None:
        """What a model-based source loads with: dtype, chat template, length."""
        c.choice(f"{key}.dtype", self.dtype, DTYPES)
        if self.chat_template not in CHAT_TEMPLATES and not ("{{" in self.chat_template or "{%" in self.chat_template):
            c.fail(
                f"{key}.chat_template",
                f"{self.chat_template!r} is not one of {list(CHAT_TEMPLATES)} nor a Jinja template",
            )
        if self.max_length is not None:
            c.at_least(f"{key}.max_length", self.max_length, 2)


def _from_stage_kinds() -> str:
    """``an implicit`` (the kinds whose entry takes ``from_stage``, for messages)."""
    kinds = [k for k, s in registry.REWARD_SOURCES.items() if s.from_stage]
    return ("an " if kinds and kinds[0][0] in "aeiou" else "a ") + " or ".join(kinds)


# ----------------------------------------------------------------------- the built-in sources' checks (check_config)
def check_rule(obj: ObjectiveConfig, c: Checker, key: str) -> None:
    """A rule names its function as ``package.module:function``."""
    if not registry.DOTTED.fullmatch(obj.function):
        c.fail(f"{key}.function", f"a rule objective needs 'package.module:function', got {obj.function!r}")


def check_classifier(obj: ObjectiveConfig, c: Checker, key: str) -> None:
    """On vLLM a reward model is read through the pooling runner, which gives classifier logits only."""
    if obj.engine == "vllm" and obj.output not in ("auto", "logits"):
        c.fail(f"{key}.output", f"{obj.output!r}: vLLM's pooling runner reads classifier logits only; use engine hf")


def check_judge(obj: ObjectiveConfig, c: Checker, key: str) -> None:
    """The judge's prompt and how its answer becomes a score (:meth:`JudgeConfig.check`)."""
    obj.judge.check(c, f"{key}.judge")


# What objectives that share a model (one forward pass serves them) must load alike.
SHARED_LOADING = (
    "dtype",
    "trust_remote_code",
    "tokenizer",
    "chat_template",
    "max_length",
    "model_kwargs",
    "engine_kwargs",
)


def check_shared_models(c: Checker, objectives: List[ObjectiveConfig]) -> None:
    """Objectives that share a model are served by one forward pass: they load it the same way.

    Raises:
        RcsInputError: the first setting two such objectives differ in, named at the later one.
    """
    first: dict = {}
    for i, obj in enumerate(objectives):
        source = registry.REWARD_SOURCES.get(obj.kind)
        if source is None or not source.loads_model:
            continue
        group = source.group(obj)
        if group not in first:
            first[group] = (i, obj)
            continue
        j, other = first[group]
        for name in SHARED_LOADING:
            if getattr(obj, name) != getattr(other, name):
                c.fail(
                    f"objectives.{i}.{name}",
                    f"objectives {j} and {i} share {obj.model} (one forward pass "
                    f"serves both) but differ in {name}: set the same",
                )

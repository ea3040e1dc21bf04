"""The dry run's cost estimate: the cost model of docs/cluster.md per stage (tokens and GPU-hours), with the rates it
assumed printed beside it. The rates are assumptions, never measurements: replace them with your own (``--rates``).

Per sampled stage with P prompts, n samples of L generated tokens (assumed ``fill`` x ``max_tokens``), prompts of p
tokens (measured on the stage's data with the policy's tokenizer and prompt rule) and its reward-model scorers:

- generation GPU-h = P x n x L / (gen x 3600) x G_engine;
- scoring GPU-h = sum over model scorers of P x (n + 2) x (p + L) / (rm x 3600) x G_scorer;
- training GPU-h = pairs processed / (train x 3600) x workers (``max_steps`` x the global batch, else every epoch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List

from rcs_ray.config import RunConfig, stage_objectives, stage_train

# Assumed rates: an 8B policy on vLLM on one H100; a 7B reward model (HF, bf16) on one H100; DPO of an 8B policy,
# ZeRO-3 on 8 H100s; the mean sample as a share of max_tokens (docs/cluster.md, "Sizing a run").
DEFAULT_RATES = {"gen": 5000.0, "rm": 25000.0, "train": 16.0, "fill": 0.7}


@dataclass
class StageCost:
    stage: int
    prompts: int
    generated_tokens: float
    scored_tokens: float
    generation_gpu_hours: float
    scoring_gpu_hours: float
    training_gpu_hours: float

    @property
    def gpu_hours(self) -> float:
        return self.generation_gpu_hours + self.scoring_gpu_hours + self.training_gpu_hours

    def as_dict(self) -> dict:
        return {**asdict(self), "gpu_hours": round(self.gpu_hours, 3)}


def parse_rates(text: str) -> Dict[str, float]:
    """``gen=5000,rm=25000,train=16,fill=0.7`` over :data:`DEFAULT_RATES` (any subset).

    Raises:
        ValueError: an unknown name or a value that is not a positive number.
    """
    rates = dict(DEFAULT_RATES)
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, _, value = item.partition("=")
        if name not in rates:
            raise ValueError(f"--rates: unknown rate {name!r} (known: {', '.join(rates)})")
        try:
            rates[name] = float(value)
        except ValueError:
            raise ValueError(f"--rates: {name}={value!r} is not a number") from None
        if rates[name] <= 0:
            raise ValueError(f"--rates: {name} must be > 0")
    return rates


def stage_costs(
    cfg: RunConfig, prompts: Dict[str, int], prompt_tokens: Dict[str, float], rates: Dict[str, float]
) -> List[StageCost]:
    """The cost of each stage (a stage whose data could not be read is left out)."""
    from rcs_ray.sampling.scorers import plan_scorers

    s, out = cfg.sampling, []
    g_engine = max(s.num_gpus, 1.0) * max(1, s.tensor_parallel_size)
    for k, st in enumerate(cfg.stages):
        p_count = prompts.get(f"stages.{k}.data")
        if p_count is None:
            continue
        t = stage_train(cfg, k)
        global_batch = t.batch_size * t.gradient_accumulation_steps * t.num_workers
        pairs = t.max_steps * global_batch if t.max_steps else (p_count // global_batch) * global_batch * t.num_epochs
        train_h = pairs / (rates["train"] * 3600) * t.num_workers  # pairs processed, every epoch
        gen = scored = gen_h = score_h = 0.0
        if st.sample:
            length = rates["fill"] * s.max_tokens
            gen = p_count * s.n * length
            gen_h = gen / (rates["gen"] * 3600) * g_engine
            p_len = prompt_tokens.get(f"stages.{k}.data", 0.0)
            for spec in plan_scorers(stage_objectives(cfg, k)):
                if not spec.source.loads_model:
                    continue
                tokens = p_count * (s.n + 2) * (p_len + length)
                scored += tokens
                score_h += tokens / (rates["rm"] * 3600) * max(spec.objectives[0].num_gpus, 1.0)
        out.append(StageCost(k + 1, p_count, gen, scored, gen_h, score_h, train_h))
    return out

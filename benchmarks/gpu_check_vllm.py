"""The vLLM engine check of ``benchmarks/gpu_check.py`` (``vllm_engine``, :func:`engine_check`), run by
``gpu_check_tasks.py`` in the check's own process."""

from __future__ import annotations

import os
import statistics
import time


def engine_check(args, numbers: dict, problems: list, config: str, ov: list, stage: int) -> None:
    """rcs-ray's own vLLM engine (``make_engine``) on the policy of ``config`` with the overrides ``ov``, over the
    prompts of its 0-based ``stage``: n samples per prompt, token counts against finished flags, distinct seeded
    samples, the ``submit`` path, tokens/s. Fills ``numbers`` and ``problems``."""
    from rcs_ray.config import load_config
    from rcs_ray.prompting import PromptRule, prompt_ids
    from rcs_ray.sampling.engines import VLLMEngine, make_engine
    from rcs_ray.sampling.job import stage_job
    from rcs_ray.sampling.pipeline import read_groups
    from rcs_ray.sampling.seeds import sample_seed

    if args.mode == "cpu":
        from rcs_ray.ray_runtime import worker_env

        for key, value in worker_env(False).items():
            os.environ.setdefault(key, value)
    cfg = load_config(config, ov)
    sp = cfg.sampling
    rows, _ = read_groups(cfg.stages[stage].data, cfg.tinyworld)
    model = stage_job(cfg, stage).policy
    t = time.perf_counter()
    engine = make_engine(model, sp)
    numbers["engine_start_s"] = round(time.perf_counter() - t, 1)
    if not isinstance(engine, VLLMEngine):
        problems.append(f"make_engine gave {type(engine).__name__}, not VLLMEngine")
    device = getattr(
        getattr(getattr(engine.llm.llm_engine, "vllm_config", None), "device_config", None), "device_type", None
    )
    numbers.update(device_type=str(device), max_model_len=engine.max_model_len)
    if args.mode == "cuda" and device not in (None, "cuda"):
        problems.append(f"vLLM runs on {device}, not cuda")
    ids = [prompt_ids(engine.tokenizer, r["prompt"], PromptRule.of(model)) for r in rows]
    seeds = [[sample_seed(sp.seed, r["prompt_id"], i) for i in range(sp.n)] for r in rows]
    engine.generate(ids[:1], [seeds[0][:1]])  # warm-up
    t = time.perf_counter()
    out = engine.generate(ids, seeds)
    seconds = time.perf_counter() - t
    flat = [c for group in out for c in group]
    tokens = sum(c.num_tokens for c in flat)
    numbers.update(
        prompts=len(rows),
        n=sp.n,
        samples=len(flat),
        tokens=tokens,
        generate_s=round(seconds, 3),
        tokens_per_s=round(tokens / seconds, 1),
        max_tokens=sp.max_tokens,
        finished_fraction=round(sum(c.finished for c in flat) / max(1, len(flat)), 3),
        mean_tokens=round(tokens / max(1, len(flat)), 2),
        mean_distinct_per_prompt=round(statistics.mean(len({c.text for c in g}) for g in out), 2),
    )
    if len(out) != len(rows) or any(len(g) != sp.n for g in out):
        problems.append(f"expected {len(rows)} prompts x {sp.n} samples, got {[len(g) for g in out][:8]}...")
    bad = [
        c for c in flat if not 1 <= c.num_tokens <= sp.max_tokens or (not c.finished and c.num_tokens != sp.max_tokens)
    ]
    if bad:
        problems.append(f"{len(bad)} samples with impossible token counts (e.g. {bad[0]})")
    if not any(c.finished for c in flat):
        problems.append("no sample finished (EOS never generated)")
    if numbers["mean_distinct_per_prompt"] < 2:
        problems.append("the samples of a prompt are (nearly) all the same: the per-sample seeds do not sample")
    future = engine.submit(ids[:8], seeds[:8])  # the pipeline's path: the engine loop
    again = future.result(timeout=120)
    if [len(g) for g in again] != [len(g) for g in out[:8]]:
        problems.append("submit() returned other shapes than generate()")
    numbers["submit_same_texts_fraction"] = round(
        statistics.mean(a.text == b.text for ga, gb in zip(again, out[:8]) for a, b in zip(ga, gb)), 3
    )

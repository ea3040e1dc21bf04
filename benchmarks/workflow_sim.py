"""The whole workflow, timed: where the wall time of a K = 3 run with adaptive resampling and an eval pass goes.

A real ``rcs_ray.workflow.run_workflow`` (then ``rcs_ray.evaluate.evaluate`` of the base and every stage's policy)
on a local Ray, with simulated models where a GPU would be: generation by :class:`benchmarks.sim.SimEngine`
(``sampling.engine=benchmarks.sim:SimEngine``) and the three objectives by simulated reward *models*
(:mod:`benchmarks.sim_rm`, ``kind: sim_rm``, one model and one actor pool per objective); each sleeps its model-load
time once per actor start and logs the load. The policy is the tiny world's real 0.4M-parameter Llama (the
simulated engine reads nothing from it), so the training steps are real Ray Train + DeepSpeed runs of it on the
simulated pairs: the hand-over from sampling to training is real, the training itself is tiny.

Every simulated duration is a realistic figure times ``--time-scale`` (default 1/30): model loads of
``--engine-load-s`` (90 s: an 8B policy on vLLM) and ``--rm-load-s`` (45 s: a 7B reward model), generation at
``--engine-tokens-per-s`` per engine and scoring at ``--rm-tokens-per-s`` per reward model (where these figures
come from: the report's "Assumptions"). Engines and reward models each take one logical GPU, as on a GPU node.

The report (``workflow_sim_<label>.json`` and ``.md`` under ``--out``) splits the wall time into start-up per pool
per round (loads counted and summed from the models' own logs), steady generation, drain, writing, training and its
hand-over, and eval, and extrapolates to real time (the simulated parts divided by the scale). Measure before and
after a change with two labels beside each other:

    python benchmarks/workflow_sim.py --label before      # 5-8 minutes on 2 busy cores
    python benchmarks/workflow_sim.py --label after --against before   # the start-up figures side by side
    python benchmarks/workflow_sim.py --smoke --out /tmp/wf  # tiny sizes, K = 2, 1-2 minutes (tests/bench)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # the workers and this driver import benchmarks.sim / benchmarks.sim_rm
    sys.path.insert(0, REPO)

from workflow_sim_probe import Timeline, read_logs  # noqa: E402  (benchmarks/ is on sys.path as a script)
from workflow_sim_report import analyse, markdown, summary_line  # noqa: E402

OBJECTIVES = ("a", "b", "c")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="run", help="names the report: workflow_sim_<label>.json / .md")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "reports", "workflow_sim"))
    p.add_argument("--time-scale", default="1/30", help="simulated seconds per real second (a fraction or float)")
    p.add_argument("--engine-load-s", type=float, default=90.0, help="real load time of one generation engine")
    p.add_argument("--rm-load-s", type=float, default=45.0, help="real load time of one reward model")
    p.add_argument("--engine-tokens-per-s", type=float, default=5000.0, help="real tokens/s of one engine")
    p.add_argument("--rm-tokens-per-s", type=float, default=25000.0, help="real tokens/s of one reward model")
    p.add_argument("--prompts", type=int, default=1024, help="prompts per stage")
    p.add_argument("--eval-prompts", type=int, default=256)
    p.add_argument("--eval-n", type=int, default=2)
    p.add_argument("--n", type=int, default=4, help="samples per prompt in the first round")
    p.add_argument("--n-max", type=int, default=16, help="adaptive resampling: n, 2n, ... up to this")
    p.add_argument("--margin", type=float, default=0.0, help="rc.margin (0: strict RC, which leaves prompts to redo)")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--engines", type=int, default=2, help="generation actors")
    p.add_argument("--k", type=int, choices=(2, 3), default=3, help="objectives (a, b[, c]), one stage each")
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument(
        "--eval-policies",
        choices=("all", "ends"),
        default="all",
        help="all: base and every stage; ends: base and the last stage",
    )
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--gpus", type=int, default=None, help="logical GPUs (default: one per engine and reward model)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and K = 2 (the test suite's run)")
    p.add_argument("--work", default=None, help="work dir (default: a temporary one, removed)")
    p.add_argument("--note", default="", help="what code ran (e.g. a commit), written into the report")
    p.add_argument("--against", default=None, help="another label in --out: its start-up figures beside this run's")
    p.add_argument("--report-only", action="store_true", help="re-render the report from its JSON (no run)")
    args = p.parse_args(argv)
    args.scale = float(Fraction(args.time_scale))
    if args.smoke:
        args.prompts, args.eval_prompts, args.eval_n, args.n, args.n_max = 16, 8, 1, 2, 4
        args.max_tokens, args.prompt_tokens, args.batch_size, args.engines, args.train_steps = 16, 8, 8, 1, 1
        args.train_batch, args.eval_policies, args.k = 2, "ends", 2
        if args.scale > 1 / 90:
            args.time_scale, args.scale = "1/90", 1 / 90
    return args


def write_prompts(path: str, count: int, words: int, salt: str) -> str:
    """``count`` synthetic prompts of ``words`` words, each with an original pair (stage 1 trains on these)."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            text = " ".join(f"{salt}{(i * 7 + j) % 997}" for j in range(words - 1))
            fh.write(json.dumps({"prompt": f"q{i} {text}", "chosen": f"good answer {i}", "rejected": f"bad {i}"}))
            fh.write("\n")
    return path


def make_config(work: str, args):
    """K = 3 (a, then b, which conflicts with a, then c; ``--k 2``: a and b), one simulated reward model per
    objective; stage 1 trains on its data as it is, the later stages sample with adaptive resampling and RC-select."""
    from rcs_ray.config import load_config

    names = OBJECTIVES[: args.k]
    data = {k: write_prompts(os.path.join(work, f"{k}.jsonl"), args.prompts, args.prompt_tokens, k) for k in names}
    evals = write_prompts(os.path.join(work, "eval.jsonl"), args.eval_prompts, args.prompt_tokens, "e")
    objectives = []
    for name in names:
        model = os.path.join(work, "models", f"rm_{name}")
        os.makedirs(model, exist_ok=True)  # the simulated reward model reads nothing from it
        objectives.append(
            f'  - {{name: {name}, kind: sim_rm, model: {model}, function: "benchmarks.sim:reward_{name}", '
            f"num_gpus: 1, num_cpus: 1, batch_size: 64}}"
        )
    rc = f"rc: {{strategy: rcs, margin: {args.margin}}}"
    text = f"""extends: {REPO}/configs/base.yaml
name: workflow-sim
output_dir: {work}/out
policy: {{path: "tinyworld:policy"}}
tinyworld: {{cache_dir: {REPO}/.cache/tinyworld}}
objectives:
{chr(10).join(objectives)}
stages:
  - {{objective: a, sample: false, data: {{path: {data["a"]}}}}}
{chr(10).join(f"  - {{objective: {k}, data: {{path: {data[k]}}}, {rc}}}" for k in names[1:])}
sampling: {{engine: "benchmarks.sim:SimEngine", n: {args.n}, max_tokens: {args.max_tokens},
           batch_size: {args.batch_size}, num_actors: {args.engines}, num_gpus: 1, num_cpus: 1,
           adaptive: {{enabled: true, n_max: {args.n_max}, rounds: 4}}}}
train: {{max_steps: {args.train_steps}, batch_size: {args.train_batch}, num_workers: 1, max_length: 64,
        learning_rate: 1.0e-5}}
eval: {{prompts: {{path: {evals}}}, n: {args.eval_n}, thresholds: {{a: 0.0}}}}
"""
    path = os.path.join(work, "config.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return load_config(path)


def sim_env(args, log_dir: str) -> dict:
    """The simulated models' knobs: realistic figures times the scale."""
    s = args.scale
    return {
        "RCS_SIM_LOAD_S": f"{args.engine_load_s * s:.4f}",
        "RCS_SIM_RM_LOAD_S": f"{args.rm_load_s * s:.4f}",
        "RCS_SIM_TOKENS_PER_S": f"{args.engine_tokens_per_s / s:.2f}",
        "RCS_SIM_SCORE_TOKENS_PER_S": f"{args.rm_tokens_per_s / s:.2f}",
        "RCS_SIM_LOG_DIR": log_dir,
    }


def start_ray(args, env: dict) -> None:
    """A local Ray with a logical GPU per engine and per reward model (all can run at once, as on one node) and the
    simulation's knobs in every worker's environment."""
    import ray

    from rcs_ray.ray_runtime import worker_env

    gpus = args.gpus or args.engines + args.k
    os.environ.update(env)  # the driver's own reads (none today) see the same figures
    ray.init(
        address="local",
        num_cpus=gpus + 4,
        num_gpus=gpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        object_store_memory=256 << 20,
        runtime_env={
            "env_vars": {
                **worker_env(False),
                **env,
                "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
            }
        },
    )


def run_once(args, work: str) -> dict:
    """The workflow and the eval of the base and every stage's policy, timed; returns the run's raw record."""
    import ray

    from benchmarks.sim_rm import register
    from rcs_ray.evaluate import evaluate
    from rcs_ray.sampling import hosts
    from rcs_ray.workflow import run_workflow

    register()
    log_dir = os.path.join(work, "sim_logs")
    os.makedirs(log_dir, exist_ok=True)
    cfg = make_config(work, args)
    start_ray(args, sim_env(args, log_dir))
    try:
        load0 = os.getloadavg()[0]
        with Timeline() as tl:
            t0 = time.time()
            with hosts.scope(cfg.ray.keep_models):  # as the demo: the workflow's reward models serve its eval
                res = run_workflow(cfg, progress=False)
                policies = {"base": _base_policy(cfg)}
                last = res.stages[-1].stage
                policies.update(
                    {f"stage{o.stage}": o.policy for o in res.stages if args.eval_policies == "all" or o.stage == last}
                )
                evaluate(cfg, policies, reference="base", progress=False)
            t1 = time.time()
    finally:
        ray.shutdown()
    host = {"cpus": os.cpu_count(), "load_avg_start": load0, "load_avg_end": os.getloadavg()[0]}
    return raw_record({**settings(args), "host": host}, tl, read_logs(log_dir), t0, t1)


def raw_record(settings: dict, tl: Timeline, logs: dict, t0: float, t1: float) -> dict:
    """What the report is computed from (kept in its JSON, so ``--report-only`` re-renders it): the driver's steps
    (a sampling step's stats, a training step's parts), round starts, writer seconds and the models' logs."""
    steps = []
    for step in tl.steps:
        res = step.get("result")
        entry = {k: step[k] for k in ("kind", "label", "t0", "t1") if k in step}
        if step["kind"] == "sample" and res is not None:
            entry["stats"] = res.stats
        if step["kind"] == "train" and res is not None:
            entry["seconds_by_part"] = res.summary.get("seconds_by_part", {})
        steps.append(entry)
    writer = {str(k): v for k, v in tl.writer.items()}
    return {
        "settings": settings,
        "t0": t0,
        "t1": t1,
        "steps": steps,
        "rounds": tl.rounds,
        "writer": writer,
        "logs": logs,
    }


def _base_policy(cfg) -> str:
    from rcs_ray.user_paths import resolve_model_dir

    return resolve_model_dir(cfg.policy.path, "policy.path", cfg.tinyworld)


def settings(args) -> dict:
    keys = (
        "label time_scale scale engine_load_s rm_load_s engine_tokens_per_s rm_tokens_per_s prompts eval_prompts "
        "eval_n n n_max margin max_tokens prompt_tokens batch_size engines gpus train_steps train_batch eval_policies "
        "smoke note k"
    ).split()
    return {k: getattr(args, k) for k in keys}


def main(argv=None) -> int:
    args = parse_args(argv)
    base = os.path.join(args.out, f"workflow_sim_{args.label}")
    if args.report_only:
        with open(base + ".json", encoding="utf-8") as fh:
            raw = json.load(fh)["raw"]
    else:
        work = args.work or tempfile.mkdtemp(prefix="workflow_sim_")
        os.makedirs(work, exist_ok=True)
        try:
            raw = run_once(args, work)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
    data = analyse(raw)
    if args.against:
        with open(os.path.join(args.out, f"workflow_sim_{args.against}.json"), encoding="utf-8") as fh:
            data["against"] = {k: v for k, v in json.load(fh).items() if k not in ("raw", "windows", "against")}
    os.makedirs(args.out, exist_ok=True)
    with open(base + ".json", "w", encoding="utf-8") as fh:
        json.dump({**data, "raw": raw}, fh, indent=1)
    with open(base + ".md", "w", encoding="utf-8") as fh:
        fh.write(markdown(data))
    print(summary_line(data))
    print(f"report: {base}.md, {base}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scorer pools sized from measured rates (issue 26 item 4): the engine's busy time when batches overlap, the hosts a
scorer needs to keep up (hand-computed), the stats' figures by pool, the warning, and `rcs-ray plan` reading them."""

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from rcs_ray.config import ModelConfig, SamplingConfig, load_config
from rcs_ray.data.pairs import group_table
from rcs_ray.sampling.busy import BusyClock
from rcs_ray.sampling.sizing import busy_figures, hosts_to_keep_up, pool_sizing, warn_short

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")


def test_busy_clock_counts_overlapping_calls_once():
    now = [0.0]
    clock = BusyClock(clock=lambda: now[0])
    shares = []

    def at(t, action):
        now[0] = t
        if action == "enter":
            clock.enter()
        else:
            shares.append(clock.leave())

    # A runs 0..4, B 1..3 inside it, then idle 4..5, C 5..6: busy 4 + 1 = 5 s (the calls' own times sum to 7)
    for t, action in ((0, "enter"), (1, "enter"), (3, "leave"), (4, "leave"), (5, "enter"), (6, "leave")):
        at(t, action)
    assert shares == [3.0, 1.0, 1.0]


class _CharTokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


class _SlowSubmitEngine:
    """An engine with ``submit`` (as vLLM's): each call's completions arrive 0.3 s later, calls overlap."""

    max_model_len = 1000
    tokenizer = _CharTokenizer()

    def __init__(self):
        self.pool = ThreadPoolExecutor(4)

    def submit(self, prompts, seeds):
        from rcs_ray.sampling.engines import Completion

        def done():
            time.sleep(0.3)
            return [[Completion(text="ok", num_tokens=1, finished=True) for _ in s] for s in seeds]

        return self.pool.submit(done)


def test_overlapping_batches_share_the_engines_busy_time_once():
    from rcs_ray.sampling.stages import AsyncGenerateStage

    engine = _SlowSubmitEngine()
    stage = AsyncGenerateStage(ModelConfig(path="x"), SamplingConfig(max_tokens=4), n_target=2, engine=engine)
    batches = [group_table([{"prompt_id": f"p{i}{j}", "prompt": "hi"} for j in range(2)], False) for i in range(3)]

    async def together():
        return await asyncio.gather(*(stage.host_call(b, n_target=2) for b in batches))

    t = time.perf_counter()
    outs = asyncio.run(together())
    wall = time.perf_counter() - t
    busy = sum(sum(o.column("seconds__generate").to_pylist()) for o in outs)
    assert 0.3 <= busy <= wall  # the three 0.3 s calls overlap: their own times would add up to 0.9 s


def test_hosts_to_keep_up_hand_computed():
    # 8 engines; a scorer working 0.3 host-s per engine-s needs 8 x 0.3 = 2.4 hosts, x 1.1 headroom = 2.64 -> 3
    assert hosts_to_keep_up(8, 0.3) == 3
    assert hosts_to_keep_up(8, 0.05) == 1  # 0.44 -> at least one
    assert hosts_to_keep_up(64, 0.25) == 18  # 64 x 0.25 x 1.1 = 17.6 -> 18
    assert hosts_to_keep_up(10, 0.1) == 2  # 1.1 exactly: ceil -> 2
    assert hosts_to_keep_up(4, None) is None


def test_figures_by_stage_and_by_pool_and_the_sizing():
    seconds = {"generate": 100.0, "score:rm_a": 30.0, "score:rule[b,c]": 5.0, "rc_filter": 0.5}
    figures = busy_figures(seconds)
    assert figures["actor_seconds_by_stage"] == {"generate": 100.0, "rc_filter": 0.5, "score": 35.0}
    assert figures["actor_seconds_by_pool"] == {"generate": 100.0, "score:rm_a": 30.0, "score:rule[b,c]": 5.0}
    assert busy_figures({"generate": 1.0}) == {"actor_seconds_by_stage": {"generate": 1.0}}  # no scorer ran
    scorers = [
        {"pool": "score:rm_a", "objectives": ["a"], "hosts": 1},
        {"pool": "score:rule[b,c]", "objectives": ["b", "c"], "hosts": 2},
    ]
    a, b = pool_sizing(8, scorers, figures["actor_seconds_by_pool"])
    assert (a["scorer_seconds_per_engine_second"], a["hosts_to_keep_up"], a["short"]) == (0.3, 3, True)
    assert (b["scorer_seconds_per_engine_second"], b["hosts_to_keep_up"], b["short"]) == (0.05, 1, False)
    assert a["engines"] == 8 and a["engine_seconds"] == 100.0 and a["busy_seconds"] == 30.0


def test_a_short_scorer_is_named_with_the_hosts_that_keep_up(caplog):
    busy = {"generate": 100.0, "score:rm_a": 30.0}

    def scorer(hosts):
        return [{"pool": "score:rm_a", "objectives": ["harmless"], "hosts": hosts}]

    with caplog.at_level(logging.WARNING, logger="rcs_ray.sampling.sizing"):
        warn_short(pool_sizing(8, scorer(1), busy))
        warn_short(pool_sizing(8, scorer(3), busy))  # enough: no warning
    (record,) = caplog.records
    assert "scorer score:rm_a kept the engines waiting" in record.message
    assert "8 engine(s) need 3 host(s) of it and it had 1; set num_actors: 3 on objective 'harmless'" in record.message


def test_plan_sizes_the_scorers_from_a_runs_recorded_rates(tiny_world, tmp_path):
    from rcs_ray.planning import plan

    stats = tmp_path / "stage2" / "sampling" / "stats.json"
    stats.parent.mkdir(parents=True)
    # a 1-engine run: the rule scorer (objectives harmless + helpful) worked 0.2 s per engine-second
    pool = {"pool": "score:rule[harmless,helpful]", "objectives": ["harmless", "helpful"], "hosts": 1, "engines": 1}
    stats.write_text(json.dumps({"pools": [{**pool, "scorer_seconds_per_engine_second": 0.2}]}))
    over = [f"tinyworld.cache_dir={os.path.dirname(tiny_world.root)}", f"output_dir={tmp_path}"]
    result = plan(load_config(K2, over + ["sampling.num_actors=16"]), gpus=0, cpus=64)
    (m,) = result.measured
    # 16 engines x 0.2 x 1.1 = 3.52 -> 4 hosts; the config has 1 (objectives.0 is harmless)
    assert (m.stage, m.key, m.engines, m.hosts, m.needed) == (2, "objectives.0.num_actors", 16, 1, 4)
    assert "too few: set objectives.0.num_actors=4" in result.report()
    assert json.loads(json.dumps(result.as_dict()))["measured_pools"][0]["needed"] == 4
    ok = plan(load_config(K2, over + ["sampling.num_actors=4", "objectives.0.num_actors=1"]), gpus=0, cpus=64)
    assert ok.measured[0].needed == 1 and "keeps up" in ok.report()  # 4 x 0.2 x 1.1 = 0.88 -> 1
    stats.write_text("{")  # damaged: nothing measured, no error
    assert plan(load_config(K2, over), gpus=0, cpus=64).measured == []

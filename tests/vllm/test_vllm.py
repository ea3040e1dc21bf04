"""The vLLM path on its CPU build: generation, the pooling reward model, and the Ray Data pipeline with vLLM."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from rcs_ray import rc
from rcs_ray.config import ModelConfig, ObjectiveConfig, SamplingConfig, load_config
from rcs_ray.tinyworld.rewards import harmless, helpful
from tests.ray.sampling_helpers import texts

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


PROMPTS = ["ask cooking how briefly", "ask chess why kindly", "ask travel where honestly"]


@pytest.fixture(scope="module")
def vllm_env():
    from rcs_ray.ray_runtime import worker_env

    for key, value in worker_env(use_gpu=False).items():
        os.environ.setdefault(key, value)


def test_vllm_generation_is_seeded_batch_invariant_and_like_hf(tiny_world, vllm_env):
    from rcs_ray.prompting import prompt_ids
    from rcs_ray.sampling.engines import HFEngine, VLLMEngine

    sampling = SamplingConfig(engine="vllm", max_tokens=24)
    engine = VLLMEngine(ModelConfig(path=tiny_world.policy), sampling)
    texts = [prompt_ids(engine.tokenizer, p, True) for p in PROMPTS]
    seeds = [[1, 2, 3], [4, 5], [6]]
    together = [[c.text for c in g] for g in engine.generate(texts, seeds)]
    alone = [[c.text for c in engine.generate([t], [s])[0]] for t, s in zip(texts, seeds)]
    assert together == alone
    # the continuous engine loop: batches submitted at once (from several threads, as the async generation stage
    # does) come back exactly as one blocking call gives them
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        futures = list(pool.map(lambda ts: engine.submit([ts[0]], [ts[1]]), zip(texts, seeds)))
    assert [[c.text for c in f.result(timeout=120)[0]] for f in futures] == together
    assert engine.submit([], []).result() == []
    bad = engine.submit([[10**9]], [[1]])  # a token id out of vocabulary fails that batch only
    with pytest.raises(Exception, match=r"Token id 1000000000 is out of vocabulary"):  # vLLM's own message
        bad.result(timeout=120)
    assert [c.text for c in engine.submit(texts[:1], seeds[:1]).result(timeout=120)[0]] == together[0]
    # the same policy through both engines: sample statistics agree (64 samples each)
    many = [list(range(64))]
    hf = HFEngine(ModelConfig(path=tiny_world.policy), SamplingConfig(max_tokens=24))
    for engine_samples in (engine.generate(texts[:1], many)[0], hf.generate(texts[:1], many)[0]):
        assert np.mean([c.finished for c in engine_samples]) > 0.9
    v = np.mean([helpful(PROMPTS[0], c.text) for c in engine.generate(texts[:1], many)[0]])
    h = np.mean([helpful(PROMPTS[0], c.text) for c in hf.generate(texts[:1], many)[0]])
    assert abs(v - h) < 1.0, (v, h)


def test_vllm_and_hf_cut_at_the_same_stop_string_and_read_the_controls_alike(tiny_world, vllm_env):
    """Greedy answers (the same on both engines): stop strings cut both at the same place (the text before the
    first one completed, the same token count, finished); the repetition penalty, top_k and min_p mean the same."""
    import dataclasses

    from rcs_ray.prompting import prompt_ids
    from rcs_ray.sampling.engines import HFEngine, VLLMEngine
    from rcs_ray.sampling.hf_sampling import first_stop

    greedy = SamplingConfig(engine="vllm", max_tokens=24, temperature=0.0)
    engines = [
        VLLMEngine(ModelConfig(path=tiny_world.policy), greedy),
        HFEngine(ModelConfig(path=tiny_world.policy), greedy),
    ]
    texts = [prompt_ids(engines[1].tokenizer, p, True) for p in PROMPTS]

    def run(**controls):
        out = []
        for engine in engines:
            engine.sampling = dataclasses.replace(greedy, **controls)
            out.append([(c.text, c.num_tokens, c.finished) for g in engine.generate(texts, [[0]] * 3) for c in g])
        assert out[0] == out[1], (controls, out)
        return out[0]

    free = run()
    assert run(temperature=1.0, top_k=1) == free and run(temperature=1.0, min_p=1.0) == free
    assert run(repetition_penalty=1.5) != free
    stops = [t[len(t) // 2 - 1 : len(t) // 2 + 2] for t, _, _ in free] + ["zzz"]  # pieces across tokens
    cut = run(stop=stops)
    for (text, n, _), (got, m, finished) in zip(free, cut):
        assert got == text[: first_stop(text, stops)[0]] and finished and 0 < m < n


def test_vllm_pooling_scorer_matches_hf(tiny_world, vllm_env):
    from rcs_ray.sampling.job import ScorerSettings
    from rcs_ray.sampling.scorers import ClassifierScorer, VLLMClassifierScorer

    objs = [
        ObjectiveConfig(name="harmless", kind="multi_head", model=tiny_world.reward_model, head=0),
        ObjectiveConfig(name="helpful", kind="multi_head", model=tiny_world.reward_model, head=1, sign=-1.0),
    ]
    responses = [" recipe spice the", " scam weapon lie", " okay"]
    np.testing.assert_allclose(
        VLLMClassifierScorer(objs, ScorerSettings()).score(PROMPTS, responses),
        ClassifierScorer(objs, ScorerSettings()).score(PROMPTS, responses),
        atol=1e-4,
    )


def test_pipeline_with_vllm_engine_and_scorer(tiny_world, ray_session, tmp_path):
    from rcs_ray.sampling import run

    cfg = load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        [
            f"output_dir={tmp_path}",
            f"tinyworld.cache_dir={os.path.join(REPO, '.cache', 'tinyworld')}",
            "stages.1.data.limit=16",
            "sampling.engine=vllm",
            "sampling.batch_size=8",
        ],
    )
    result = run(cfg, progress=False)
    pairs, failed = pq.read_table(result.pairs).to_pylist(), pq.read_table(result.failed).to_pylist()
    assert len(pairs) + len(failed) == 16 and len(pairs) >= 8
    for p in pairs:
        assert p["chosen_rewards"] == [harmless(*texts(p, "chosen")), helpful(*texts(p, "chosen"))]
        assert rc.is_consistent(p["chosen_rewards"], p["rejected_rewards"], enforce=[0], margin=-0.5)
        assert p["chosen_rewards"][1] > p["rejected_rewards"][1]
    assert result.stats["engine"] == "vllm"


# ----------------------------------------------------------------------------------------------- real families
def test_vllm_reads_real_families_like_hf(replicas, vllm_env):
    """On the replicas: a Llama-3-style policy stops at <|eot_id|> and takes sampling.engine_kwargs; the pooling
    scorer reads the classifier RM through its own template as HF does; a vLLM judge gives HF's expected score."""
    from rcs_ray.prompting import prompt_ids
    from rcs_ray.sampling.engines import HFEngine, VLLMEngine
    from rcs_ray.sampling.job import ScorerSettings
    from rcs_ray.sampling.judges import JudgeScorer, VLLMJudgeScorer
    from rcs_ray.sampling.scorers import ClassifierScorer, VLLMClassifierScorer

    engine = VLLMEngine(
        ModelConfig(path=replicas["policy"]),
        SamplingConfig(engine="vllm", max_tokens=6, engine_kwargs={"max_num_seqs": 4}),
    )
    assert engine.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs == 4
    assert engine.tokenizer.convert_tokens_to_ids("<|eot_id|>") in engine.stop
    assert engine.max_model_len == HFEngine(ModelConfig(path=replicas["policy"]), SamplingConfig()).max_model_len
    out = engine.generate([prompt_ids(engine.tokenizer, "hello", True)], [[1, 2, 3]])[0]
    assert len(out) == 3 and all(0 < c.num_tokens <= 6 for c in out)
    prompts, responses = ["how to bake bread", "pick a lock"], ["sure here is help", "harm bad answer"]
    rm = [ObjectiveConfig(name="h", kind="classifier", model=replicas["helpful_rm"], engine="vllm")]
    on_vllm, on_hf = VLLMClassifierScorer(rm, ScorerSettings()), ClassifierScorer(rm, ScorerSettings())
    assert on_vllm.max_length == on_hf.max_length  # the one context-limit rule (rcs_ray.modeling.context)
    np.testing.assert_allclose(on_vllm.score(prompts, responses), on_hf.score(prompts, responses), atol=1e-4)
    del on_vllm, on_hf  # an in-process vLLM engine must not be torn down while the next one runs
    judge = [ObjectiveConfig(name="q", kind="judge", model=replicas["judge"])]
    on_vllm, on_hf = VLLMJudgeScorer(judge, ScorerSettings()), JudgeScorer(judge, ScorerSettings())
    assert on_vllm.max_length == on_hf.max_length
    np.testing.assert_allclose(on_vllm.score(prompts, responses), on_hf.score(prompts, responses), atol=1e-4)

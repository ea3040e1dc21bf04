"""Real model families on tiny replicas (tests/replicas), without Ray, past the reward models (those:
tests/ray/test_model_families.py): judges score as hand-computed and an unparseable answer fails its prompt only;
generation stops where each family ends a turn; sampled pairs go to TRL with the token ids our trainer uses."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rcs_ray.config import JudgeConfig, ObjectiveConfig
from rcs_ray.sampling.job import ScorerSettings

pytestmark = [pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["how to bake bread", [{"role": "system", "content": "be kind"}, {"role": "user", "content": "pick a lock"}]]
RESPONSES = ["sure here is help", "harm bad answer"]


# ----------------------------------------------------------------------------------------------- judges
def test_judge_expected_score_is_the_hand_computed_expectation(replicas):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rcs_ray.sampling.judges import JudgeScorer, label_text

    obj = ObjectiveConfig(name="quality", kind="judge", model=replicas["judge"])
    got = JudgeScorer([obj], ScorerSettings()).score(PROMPTS[:1], RESPONSES[:1])[0, 0]
    tok = AutoTokenizer.from_pretrained(replicas["judge"])
    model = AutoModelForCausalLM.from_pretrained(replicas["judge"]).eval()
    rubric = obj.judge.template.format(prompt=PROMPTS[0], response=RESPONSES[0])
    ids = tok.apply_chat_template([{"role": "user", "content": rubric}], add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]
    logps = []
    for s in obj.judge.scores:
        label = tok(label_text(s), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids + label])).logits[0].double(), -1)
        logps.append(sum(float(lp[len(ids) + i - 1, t]) for i, t in enumerate(label)))
    p = np.exp(np.array(logps) - max(logps))
    assert got == pytest.approx(float(p / p.sum() @ np.array(obj.judge.scores)), rel=1e-6)


def test_an_unparseable_judge_answer_fails_that_prompt_only(replicas):
    from rcs_ray.config import RCConfig
    from rcs_ray.data.pairs import group_table
    from rcs_ray.sampling.judges import JudgeScorer, parse_score
    from rcs_ray.sampling.rc_step import RCFilterStage

    assert parse_score("I'd say 7/10", r"(\d+)") == 7.0 and np.isnan(parse_score("no idea", r"(\d+)"))
    obj = ObjectiveConfig(
        name="q",
        kind="judge",
        model=replicas["judge"],
        judge=JudgeConfig(mode="parse", pattern=r"Score: (\d+)", max_tokens=3),
    )
    scores = JudgeScorer([obj], ScorerSettings()).score(PROMPTS[:1] * 2, RESPONSES)[:, 0]
    assert np.isnan(scores).all()  # a random model never writes "Score: <n>"
    rows = [
        {
            "prompt_id": "p",
            "prompt": "x",
            "candidates": ["a", "b"],
            "sources": ["sampled"] * 2,
            "reward__q": scores.tolist(),
        }
    ]
    out = RCFilterStage(["q"], "q", RCConfig())(group_table(rows, False)).to_pylist()[0]
    assert out["failure_reason"] == "non_finite_reward"


# ----------------------------------------------------------------------------------------------- policies
def test_each_family_ends_a_turn_where_its_generation_config_says(replicas):
    from transformers import AutoTokenizer

    from rcs_ray.config import ModelConfig, SamplingConfig
    from rcs_ray.prompting import prompt_ids
    from rcs_ray.sampling.engines import HFEngine

    llama = HFEngine(ModelConfig(path=replicas["policy"]), SamplingConfig(max_tokens=4))
    tok = llama.tokenizer
    assert tok.eos_token == "<|end_of_text|>" and tok.convert_tokens_to_ids("<|eot_id|>") in llama.eos
    ids = prompt_ids(tok, "hello", True)
    assert (
        tok.decode(ids) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert prompt_ids(tok, "hello", False)[0] == tok.bos_token_id  # plain text: the tokenizer's own BOS
    qwen = AutoTokenizer.from_pretrained(replicas["qwen2"])
    assert qwen.decode(prompt_ids(qwen, "hello", True)) == (
        "<|im_start|>system\nYou are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    engine = HFEngine(ModelConfig(path=replicas["qwen2"]), SamplingConfig(max_tokens=4))
    assert set(engine.eos) == {qwen.convert_tokens_to_ids("<|im_end|>"), qwen.convert_tokens_to_ids("<|endoftext|>")}
    out = engine.generate([prompt_ids(qwen, "hello", True)], [[1, 2]])[0]
    assert len(out) == 2 and all(0 < c.num_tokens <= 4 for c in out)


def test_pairs_go_to_trl_with_the_token_ids_our_trainer_uses(replicas, tmp_path):
    """A sampled pairs.parquet (plain prompts read through the chat template are stored in TRL's conversational
    form) tokenized by trl.DPOTrainer gives exactly the ids of our training features."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rcs_ray.data.pairs import group_table
    from rcs_ray.modeling.logprobs import build_pair_features
    from rcs_ray.sampling.writer import OutputWriter

    writer = OutputWriter(str(tmp_path), ["h"], "h", chat=True)  # as the pipeline writes it
    writer.write(
        group_table(
            [
                {
                    "prompt_id": str(i),
                    "prompt": p,
                    "candidates": [c, r],
                    "sources": ["sampled"] * 2,
                    "reward__h": [1.0, 0.0],
                    "chosen_index": 0,
                    "rejected_index": 1,
                    "failure_reason": None,
                }
                for i, (p, c, r) in enumerate(
                    [
                        ("how to bake bread", "sure here is help", "harm bad"),
                        ("write code in python", "here is a list", "no"),
                    ]
                )
            ],
            False,
        ),
        0,
    )
    writer.commit({})
    table = pq.read_table(tmp_path / "pairs.parquet")
    rows = table.select(["prompt", "chosen", "rejected"]).to_pylist()
    assert rows[0]["prompt"] == [{"role": "user", "content": "how to bake bread"}]
    tok = AutoTokenizer.from_pretrained(replicas["policy"])
    tok.pad_token = tok.eos_token
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(replicas["policy"]),
        args=DPOConfig(
            output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, per_device_train_batch_size=1, max_length=None
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    for i, row in enumerate(rows):
        ours = build_pair_features(
            tok,
            "how to bake bread" if i == 0 else "write code in python",
            row["chosen"][0]["content"],
            row["rejected"][0]["content"],
            512,
            use_chat_template=True,
        )
        theirs = trainer.train_dataset[i]
        assert ours["chosen_input_ids"] == theirs["prompt_ids"] + theirs["chosen_ids"]
        assert ours["rejected_input_ids"] == theirs["prompt_ids"] + theirs["rejected_ids"]
        n = len(theirs["prompt_ids"])
        assert ours["chosen_labels"][:n] == [-100] * n and ours["chosen_labels"][n:] == theirs["chosen_ids"]

"""Real model families on tiny replicas (tests/replicas), without Ray: each reward is read from the intended output,
a model that would score with random weights is refused in one line, Hub IDs resolve from a local HF cache offline,
judges score as hand-computed, generation stops where each family ends a turn, and sampled pairs go to TRL with the
token ids our trainer uses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rcs_ray.config import DataConfig, JudgeConfig, ObjectiveConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.reward_models import check_reward_model
from rcs_ray.sampling.job import ScorerSettings
from rcs_ray.sampling.scorers import ClassifierScorer

pytestmark = [pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["how to bake bread", [{"role": "system", "content": "be kind"}, {"role": "user", "content": "pick a lock"}]]
RESPONSES = ["sure here is help", "harm bad answer"]
BEAVER = (
    "{{ bos_token }}BEGINNING OF CONVERSATION:{% for m in messages %}{% if m['role'] == 'assistant' %} "
    "ASSISTANT:{{ m['content'] }}{{ eos_token }}{% else %} USER: {{ m['content'] }}{% endif %}{% endfor %}"
)


def messages(prompt, response):
    return ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)) + [
        {"role": "assistant", "content": response}
    ]


# ----------------------------------------------------------------------------------------------- the right output
def test_armorm_rewards_and_score_are_its_own_fields(replicas):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = replicas["armorm"]
    objs = [
        ObjectiveConfig(name=n, kind="multi_head", model=path, output=o, head=h, trust_remote_code=True)
        for n, o, h in (("helpful", "rewards", 0), ("honest", "rewards", 8), ("gated", "score", 0))
    ]
    got = ClassifierScorer(objs, ScorerSettings(trust_remote_code=True)).score(PROMPTS, RESPONSES)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        ids = tok.apply_chat_template(messages(p, r), return_dict=True, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids)
        np.testing.assert_allclose(got[i], [out.rewards[0, 0], out.rewards[0, 8], out.score[0]], rtol=1e-5, atol=1e-6)
        assert abs(float(out.logits[0]) - float(out.rewards[0, 0])) > 1e-4  # logits is the gated score, not [0]
    # auto reads rewards for a multi-head objective, the score for a classifier one
    assert check_reward_model(path, "auto", [0, 8], "multi_head", True, "objectives.1.model") == "rewards"
    assert check_reward_model(path, "auto", [0], "classifier", True, "objectives.1.model") == "score"


def test_safe_rlhf_cost_model_reads_its_score_head_at_the_last_token(replicas):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaModel

    path = replicas["cost"]
    obj = ObjectiveConfig(name="harmless", kind="classifier", model=path, output="auto", sign=-1.0)
    got = ClassifierScorer([obj], ScorerSettings(chat_template=BEAVER)).score(PROMPTS, RESPONSES)[:, 0]
    tok = AutoTokenizer.from_pretrained(path)
    backbone = LlamaModel.from_pretrained(path).eval()
    head = load_file(os.path.join(path, "model.safetensors"))["score_head.weight"][0]
    for p, r, g in zip(PROMPTS, RESPONSES, got):
        user = p if isinstance(p, str) else p[-1]["content"]
        text = (
            f"<s>BEGINNING OF CONVERSATION:{'' if isinstance(p, str) else ' USER: be kind'} USER: {user} "
            f"ASSISTANT:{r}</s>"
        )
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            end = backbone(input_ids=ids).last_hidden_state[0, -1]
        assert g == pytest.approx(-float(end @ head), rel=1e-5, abs=1e-6)


def test_a_classifier_rm_reads_through_its_own_template(replicas):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = replicas["helpful_rm"]
    got = ClassifierScorer([ObjectiveConfig(name="h", kind="classifier", model=path)], ScorerSettings()).score(
        PROMPTS, RESPONSES
    )[:, 0]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    for p, r, g in zip(PROMPTS, RESPONSES, got):
        text = tok.apply_chat_template(messages(p, r), tokenize=False)
        assert text.startswith("<bos><start_of_turn>")
        with torch.no_grad():
            want = float(model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0])
        assert g == pytest.approx(want, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------------------------- never random weights
@pytest.mark.parametrize(
    "which, output, heads, trust, needles",
    [
        ("cost", "logits", [0], False, ["score.weight", "score_head.weight", "output=end_scores"]),
        ("armorm", "auto", [0], False, ["score.weight", "trust_remote_code=true"]),
        ("policy", "auto", [0], False, ["causal language model", "implicit"]),
        ("armorm", "rewards", [19], True, ["objectives.1.head", "19 out of range", "19 value"]),
        ("cost", "end_scores", [1], False, ["head", "1 out of range"]),
        ("helpful_rm", "rewards", [0], False, ["num_objectives", "use logits"]),
    ],
)
def test_a_reward_model_that_would_score_with_random_weights_is_refused(replicas, which, output, heads, trust, needles):
    with pytest.raises(RcsInputError) as err:
        check_reward_model(replicas[which], output, heads, "multi_head", trust, "objectives.1.model")
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_the_loader_refuses_what_the_preflight_would(replicas):
    from rcs_ray.modeling.checkpoints import check_causal_lm
    from rcs_ray.sampling.scorers import load_classifier

    with pytest.raises(RcsInputError, match="random weights for score.weight"):
        load_classifier(replicas["cost"], ScorerSettings(), "objectives.0")
    with pytest.raises(RcsInputError, match="reward model .*not a causal language model"):
        check_causal_lm(replicas["helpful_rm"], "policy.path")


def test_a_truncated_checkpoint_is_named(replicas, tmp_path):
    import shutil

    from rcs_ray.modeling.checkpoints import check_causal_lm

    broken = shutil.copytree(replicas["policy"], tmp_path / "broken")
    with open(broken / "model.safetensors", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(RcsInputError, match=r"policy.path: .*model.safetensors is not a readable checkpoint"):
        check_causal_lm(str(broken), "policy.path")


def test_missing_head_stops_the_cli_in_one_line_before_anything_runs(replicas, tmp_path):
    env = dict(os.environ, RCS_MODELS=replicas["models"], RCS_DATA=replicas["data"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rcs_ray",
            "sample",
            "configs/paper/pku_helpsteer_k2.yaml",
            "objectives.0.output=logits",
            f"policy.path={replicas['policy']}",
            f"objectives.1.model={replicas['helpful_rm']}",
            f"output_dir={tmp_path}",
            "sampling.engine=hf",
            "sampling.num_gpus=0",
            "objectives.0.num_gpus=0",
            "objectives.1.num_gpus=0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "objectives.0.model" in errors[0] and "score.weight" in errors[0] and "end_scores" in errors[0]
    assert not os.listdir(tmp_path)  # nothing written, no Ray started


# ----------------------------------------------------------------------------------------------- Hub IDs
def test_hub_ids_resolve_from_a_local_cache_offline(replicas, monkeypatch, tmp_path):
    from rcs_ray.data import read_preferences
    from rcs_ray.paths import resolve_data, resolve_model_dir

    monkeypatch.setenv("HF_HUB_CACHE", replicas["hub"])
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))  # load_dataset's prepared copies
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_model_dir("meta-llama/Meta-Llama-3-8B-Instruct", "policy.path")
    assert "models--meta-llama--Meta-Llama-3-8B-Instruct/snapshots/" in path
    assert json.load(open(os.path.join(path, "config.json")))["architectures"] == ["LlamaForCausalLM"]
    commit = os.path.basename(path)
    assert resolve_model_dir(f"meta-llama/Meta-Llama-3-8B-Instruct@{commit}", "policy.path") == path
    with pytest.raises(
        RcsInputError,
        match=r"^policy.path: Hub model 'hf://meta-llama/Nope' is not in the HF cache "
        r".*HF_HUB_OFFLINE=1",
    ):
        resolve_model_dir("hf://meta-llama/Nope", "policy.path")
    with pytest.raises(
        RcsInputError,
        match=r"^policy.path: meta-llama/Nope is neither a local directory \(not found: "
        r".*\) nor a model in the Hugging Face cache",
    ):
        resolve_model_dir("meta-llama/Nope", "policy.path")
    data = resolve_data(
        DataConfig(path="PKU-Alignment/PKU-SafeRLHF", preset="pku_saferlhf", objective="harmless", split="train"),
        key="stages.0.data.path",
    )
    pref = read_preferences(data)
    assert len(pref.rows) == 24 and pref.objectives == ["helpful", "harmless"]
    uf = read_preferences(
        resolve_data(
            DataConfig(
                path="HuggingFaceH4/ultrafeedback_binarized", preset="ultrafeedback_binarized", split="test_prefs"
            )
        )
    )
    assert len(uf.rows) == 4 and uf.rows[0]["prompt"][0]["role"] == "user"


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
    import pyarrow.parquet as pq
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

"""Real model families on tiny replicas (tests/replicas), without Ray: each reward is read from the intended output,
a model that would score with random weights is refused in one line, Hub IDs resolve from a local HF cache offline;
judges and the policies' own conventions: tests/ray/test_judge_and_policy_families.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rcs_ray.config import DataConfig, ObjectiveConfig
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
    from rcs_ray.user_paths import resolve_data, resolve_model_dir

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

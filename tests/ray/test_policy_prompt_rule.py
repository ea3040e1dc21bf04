"""One prompt rule on a Qwen3-style replica (``enable_thinking: false``) with a system prompt: generation, a reward
model with ``chat_template: policy``, the implicit reward and training tokenization all read the same text."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from rcs_ray.config import ModelConfig, ObjectiveConfig, SamplingConfig, TrainConfig
from rcs_ray.sampling.engines import Completion
from rcs_ray.sampling.job import scorer_settings

pytestmark = [pytest.mark.slow]

PROMPT, RESPONSE = "how to bake bread", "sure here is help"
# what the policy continues: the system message, the user turn, the generation prompt with the empty think block
READ = (
    "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhow to bake bread<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
TURN = RESPONSE + "<|im_end|>\n"  # the response as the template closes the turn


@pytest.fixture(scope="module")
def policy(replicas):
    return ModelConfig(
        path=replicas["qwen3"], system_prompt="be brief", chat_template_kwargs={"enable_thinking": False}
    )


@pytest.fixture(scope="module")
def tok(policy):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(policy.path)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


class Recorder:
    """An engine that records the prompt ids it is given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.max_model_len, self.prompts = tokenizer, 512, []

    def generate(self, prompts, seeds):
        self.prompts += [list(p) for p in prompts]
        return [[Completion(text=RESPONSE, num_tokens=4, finished=True) for _ in s] for s in seeds]


def test_generation_reads_the_system_prompt_and_the_template_variable(policy, tok):
    from rcs_ray.sampling.stages import GenerateStage

    engine = Recorder(tok)
    stage = GenerateStage(policy, SamplingConfig(n=1), n_target=1, include_original=False, engine=engine)
    out = stage(pa.table({"prompt_id": ["a", "b"], "prompt": [PROMPT, PROMPT]}))
    assert out.column("candidates").to_pylist() == [[RESPONSE], [RESPONSE]]
    assert engine.prompts == [encode(tok, READ)] * 2
    assert tok.decode(engine.prompts[0]) == READ


def test_a_reward_model_with_the_policys_template_reads_the_same_text(policy, replicas):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rcs_ray.sampling.scorers import ClassifierScorer

    obj = ObjectiveConfig(name="h", kind="classifier", model=replicas["helpful_rm"], chat_template="policy")
    got = ClassifierScorer([obj], scorer_settings(obj, policy, 512)).score([PROMPT], [RESPONSE])[0, 0]
    rm_tok = AutoTokenizer.from_pretrained(replicas["helpful_rm"])
    model = AutoModelForSequenceClassification.from_pretrained(replicas["helpful_rm"]).eval()
    with torch.no_grad():
        want = float(model(input_ids=torch.tensor([encode(rm_tok, READ + TURN)])).logits[0, 0])
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def _response_logp(model, prompt_ids, response_ids):
    with torch.no_grad():
        ids = prompt_ids + response_ids
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids)))


def test_the_implicit_reward_and_training_read_the_same_tokens(policy, tok, tmp_path):
    from transformers import AutoModelForCausalLM

    from rcs_ray.sampling.scorers import ImplicitRewardScorer
    from rcs_ray.train.refs import FeatureSettings, TokenizePairs
    from tests.replicas import qwen3_policy

    prompt_ids, response_ids = encode(tok, READ), encode(tok, TURN)  # what generation gave, what it wrote
    # training: the pairs file's conversational rows (the prompt as one user message) tokenized by the policy's rule
    settings = FeatureSettings.of(TrainConfig(max_length=512), policy, policy.path, tok.pad_token_id)
    row = {
        "prompt": [[{"role": "user", "content": PROMPT}]],
        "chosen": [[{"role": "assistant", "content": RESPONSE}]],
        "rejected": [[{"role": "assistant", "content": "no"}]],
    }
    feats = TokenizePairs(**settings.tokenize_kwargs())(pa.table(row)).to_pylist()[0]
    assert feats["chosen_input_ids"] == prompt_ids + response_ids
    assert feats["chosen_labels"] == [-100] * len(prompt_ids) + response_ids
    assert tok.decode(feats["chosen_input_ids"]) == READ + TURN
    # the implicit reward: beta * (log pi - log pi_ref) on those tokens
    reference = qwen3_policy(str(tmp_path / "ref"), seed=11)
    obj = ObjectiveConfig(name="imp", kind="implicit", model=policy.path, reference=reference, beta=0.5)
    got = ImplicitRewardScorer([obj], scorer_settings(obj, policy, 512)).score([PROMPT], [RESPONSE])[0, 0]
    models = [AutoModelForCausalLM.from_pretrained(p).eval() for p in (policy.path, reference)]
    want = 0.5 * (
        _response_logp(models[0], prompt_ids, response_ids) - _response_logp(models[1], prompt_ids, response_ids)
    )
    assert abs(want) > 1e-3 and np.isclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_system_prompt_needs_a_tokenizer_with_a_template(policy, replicas):
    import dataclasses

    from rcs_ray.errors import RcsInputError
    from rcs_ray.sampling.job import check_prompt_rule

    check_prompt_rule(policy)
    with pytest.raises(RcsInputError, match=r"^policy.system_prompt: the policy's tokenizer .* has no chat template"):
        check_prompt_rule(dataclasses.replace(policy, tokenizer=replicas["cost"]))  # beaver: no template

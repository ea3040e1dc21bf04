"""One prompt rule for every reader of a prompt, and one registry entry per loss: hand-built tokenizer, no models."""

import pytest
import torch

from rcs_ray import prompting, registry
from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.logprobs import tokenize_example
from tests.wordtok import BOS, EOS, ids, word_tokenizer

pytestmark = pytest.mark.unit


def test_the_rule(tok):
    chat = [{"role": "user", "content": "hi there"}]
    assert prompting.as_chat("hi there", tok, True) == chat
    assert prompting.as_chat("hi there", tok, False) == "hi there"
    assert prompting.as_chat(chat, tok, False) == chat  # a chat stays a chat
    assert prompting.as_chat(tuple(chat), tok, True) == chat  # Arrow may hand over tuples


def test_generation_ids_under_each_rule(tok):
    # plain, no template: the tokenizer's own BOS; templated: the template's BOS, the user tag, the assistant tag
    assert prompting.prompt_ids(tok, "hi there", False) == [BOS] + ids("hi there")
    assert prompting.prompt_ids(tok, "hi there", True) == [BOS] + ids("<|user|> hi there <|assistant|>")
    no_template = word_tokenizer()
    no_template.chat_template = None  # a chat prompt cannot be read without one
    with pytest.raises(ValueError, match="tokenizer.chat_template is not set"):
        prompting.prompt_ids(no_template, [{"role": "user", "content": "hi"}], True)
    with pytest.raises(ValueError, match="tokenizer: has no chat_template, needed for a chat-message prompt"):
        prompting.split_ids(no_template, [{"role": "user", "content": "hi"}], "there", True)


@pytest.mark.parametrize("use_chat_template", [False, True])
def test_batch_ids_are_the_one_by_one_ids(tok, use_chat_template):
    prompts = ["hi there", [{"role": "user", "content": "good answer"}], "there", [{"role": "nobody"}]]
    batch = prompting.prompt_ids_batch(tok, prompts, use_chat_template)
    assert batch[:3] == [prompting.prompt_ids(tok, p, use_chat_template) for p in prompts[:3]]
    assert batch[0] == (
        [BOS] + ids("<|user|> hi there <|assistant|>") if use_chat_template else [BOS] + ids("hi there")
    )
    assert isinstance(batch[3], Exception)  # a malformed message fails its prompt only

    class OneByOne:  # a custom engine's tokenizer: one text per call
        chat_template = None

        def __call__(self, text, add_special_tokens=True):
            if text == "bad":
                raise ValueError("refused")
            return {"input_ids": [len(w) for w in text.split()]}

    got = prompting.encode_batch(OneByOne(), ["a bb", "bad", "ccc"], False)
    assert got[0] == [1, 2] and isinstance(got[1], ValueError) and got[2] == [3]


@pytest.mark.parametrize("use_chat_template", [False, True])
@pytest.mark.parametrize("prompt", ["how are you", [{"role": "user", "content": "how are you"}]])
def test_generation_and_training_read_the_same_prompt(tok, prompt, use_chat_template):
    """What the engine is given is exactly the prompt part of what training (and the implicit reward, and the
    reference pass) tokenize, under either setting."""
    gen = prompting.prompt_ids(tok, prompt, use_chat_template)
    ex = tokenize_example(tok, prompt, "good answer", 64, use_chat_template=use_chat_template)
    n = len(gen)
    assert ex["input_ids"][:n] == gen
    assert ex["labels"][:n] == [-100] * n and all(x != -100 for x in ex["labels"][n:])
    assert ex["input_ids"][n:] == ids("good answer") + [EOS]  # both rules end the response with EOS


def test_reward_model_reads_the_conversation(tok):
    # a reward model with a template reads the whole conversation through it; without one, prompt + response
    assert prompting.conversation_ids(tok, "hi", "good") == [BOS] + ids("<|user|> hi <|assistant|> good") + [EOS]
    plain = type(
        "Plain",
        (),
        {
            "chat_template": None,
            "__call__": lambda self, text, add_special_tokens=True: {
                "input_ids": ([BOS] if add_special_tokens else []) + ids(text)
            },
        },
    )()
    assert prompting.conversation_ids(plain, "hi", " good") == [BOS] + ids("hi good")
    chat = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]
    assert prompting.conversation_ids(plain, chat, " good") == [BOS] + ids("be kind hi good")


# A template with a variable, as Qwen3's enable_thinking: false writes a block after the assistant tag (here "long")
THINKING = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {% if m['role'] == 'assistant' and "
    "enable_thinking is defined and not enable_thinking %}long {% endif %}{{ m['content'] }} "
    "{% if m['role'] == 'assistant' %}{{ eos_token }} {% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|assistant|> {% if enable_thinking is defined and not enable_thinking %}long {% endif %}{% endif %}"
)
RULE = prompting.PromptRule(chat_template=True, system="be kind", kwargs={"enable_thinking": False})


@pytest.fixture()
def thinking(tok):
    import copy

    out = copy.deepcopy(tok)
    out.chat_template = THINKING
    return out


def test_the_rule_with_a_system_prompt_and_template_variables(thinking):
    from rcs_ray.config import ModelConfig

    system, user = {"role": "system", "content": "be kind"}, {"role": "user", "content": "hi there"}
    assert (
        prompting.PromptRule.of(ModelConfig(system_prompt="be kind", chat_template_kwargs={"enable_thinking": False}))
        == RULE
    )
    assert prompting.rule_of(True) == prompting.PromptRule() and prompting.rule_of(RULE) is RULE
    assert prompting.as_chat("hi there", thinking, RULE) == [system, user]  # plain prompts and chats alike
    assert prompting.as_chat([user], thinking, RULE) == [system, user]
    own = [{"role": "system", "content": "be good"}, user]
    assert prompting.as_chat(own, thinking, RULE) == own  # a row's own system message wins
    want = [BOS] + ids("<|system|> be kind <|user|> hi there <|assistant|> long")
    assert prompting.prompt_ids(thinking, "hi there", RULE) == want
    assert prompting.prompt_ids_batch(thinking, ["hi there", [user], [system, user]], RULE) == [want] * 3
    assert prompting.prompt_ids(thinking, "hi there", True) == [BOS] + ids("<|user|> hi there <|assistant|>")


@pytest.mark.parametrize(
    "prompt",
    [
        "hi there",
        [{"role": "user", "content": "hi there"}],
        [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi there"}],
    ],
)
def test_generation_training_and_scoring_read_the_rule_alike(thinking, prompt):
    """The engine's prompt ids are the prompt part of what training and the implicit reward tokenize, and of what a
    reward model with the policy's template reads -- with the system prompt and the template variable; a prompt that
    already carries the system message (a conversational pairs file) reads the same."""
    gen = prompting.prompt_ids(thinking, prompt, RULE)
    ex = tokenize_example(thinking, prompt, "good answer", 64, use_chat_template=RULE)
    assert gen == [BOS] + ids("<|system|> be kind <|user|> hi there <|assistant|> long")
    assert ex["input_ids"] == gen + ids("good answer") + [EOS]
    assert ex["labels"] == [-100] * len(gen) + ids("good answer") + [EOS]
    assert prompting.conversation_ids(thinking, prompt, "good", RULE) == gen + ids("good") + [EOS]


def test_a_system_prompt_needs_a_chat(tok):
    plain = prompting.PromptRule(chat_template=False, system="be kind")
    with pytest.raises(ValueError, match="system prompt is a chat message"):
        prompting.as_chat("hi there", tok, plain)
    assert isinstance(prompting.prompt_ids_batch(tok, ["hi there"], plain)[0], ValueError)  # that prompt fails


# ----------------------------------------------------------------------------------------------- the loss registry
def hinge_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    margin=1.0,
    chosen_bonus=None,
    rejected_bonus=None,
):
    """A test loss: max(0, margin - beta * h) with h the DPO logit plus a per-pair bonus column difference."""
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if chosen_bonus is not None:
        h = h + (chosen_bonus - rejected_bonus).sum(dim=1)
    return torch.clamp(margin - beta * h, min=0).mean(), {"h": float(h.mean())}


def test_a_new_loss_is_one_registry_entry(monkeypatch):
    from rcs_ray.config import load_config
    from rcs_ray.train.batches import preference_loss

    spec = registry.LossSpec(
        "tests.unit.test_prompting:hinge_loss", params=(), inputs=("chosen_bonus", "rejected_bonus")
    )
    monkeypatch.setitem(registry.LOSSES, "hinge", spec)
    assert load_config(None, ["train.loss=hinge"]).train.loss == "hinge"  # the config accepts it
    with pytest.raises(RcsInputError, match="train.loss"):
        load_config(None, ["train.loss=nope"])
    batch = {
        "ref_chosen_logps": torch.tensor([-1.0, -2.0]),
        "ref_rejected_logps": torch.tensor([-1.0, -1.0]),
        "chosen_margin": torch.tensor([[0.5], [0.0]]),
        "rejected_margin": torch.tensor([[0.0], [1.0]]),
    }
    chosen, rejected = torch.tensor([-0.5, -1.0]), torch.tensor([-1.5, -1.0])
    loss, metrics = preference_loss("hinge", chosen, rejected, batch, beta=0.5, loss_kwargs={"margin": 2.0})
    # h = (0.5 - -0.5) + 0.5 = 1.5 and (1.0 - 0.0) - 1.0 = 0.0: mean(max(0, 2 - 0.75), max(0, 2 - 0)) = 1.625
    assert loss.item() == pytest.approx(1.625) and metrics["h"] == pytest.approx(0.75)


def test_the_loop_calls_every_registered_loss_the_same_way():
    from rcs_ray.train.batches import preference_loss
    from rcs_ray.train.losses import dpo_loss, modpo_loss, spo_loss

    b = {
        "ref_chosen_logps": torch.tensor([-1.0]),
        "ref_rejected_logps": torch.tensor([-2.0]),
        "chosen_margin": torch.tensor([[0.3]]),
        "rejected_margin": torch.tensor([[0.1]]),
    }
    c, r = torch.tensor([-0.5]), torch.tensor([-2.5])
    got = preference_loss("modpo", c, r, b, 0.1, {"weights": [0.5, 0.5]})[0]
    assert (
        got
        == modpo_loss(
            c,
            r,
            b["ref_chosen_logps"],
            b["ref_rejected_logps"],
            b["chosen_margin"],
            b["rejected_margin"],
            [0.5, 0.5],
            beta=0.1,
        )[0]
    )
    got = preference_loss("spo", c, r, b, 0.1, {"alphas": [2.0]})[0]
    assert (
        got
        == spo_loss(
            c,
            r,
            b["ref_chosen_logps"],
            b["ref_rejected_logps"],
            b["chosen_margin"],
            b["rejected_margin"],
            [2.0],
            beta=0.1,
        )[0]
    )
    no_margin = {k: v for k, v in b.items() if "margin" not in k}
    assert (
        preference_loss("dpo", c, r, no_margin, 0.1)[0]
        == dpo_loss(c, r, b["ref_chosen_logps"], b["ref_rejected_logps"], 0.1)[0]
    )

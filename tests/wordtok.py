"""A hand-built word-level tokenizer for tests that must know every token id (no trained vocabulary, no model).

Plain text gets BOS; the chat template ends each assistant turn with EOS. ``ids("hi there")`` spells text as ids.
"""

WORDS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "hi",
    "there",
    "how",
    "are",
    "you",
    "good",
    "bad",
    "answer",
    "very",
    "long",
    "prompt",
    "be",
    "kind",
]
PAD, BOS, EOS = 0, 1, 2
ID = {w: i for i, w in enumerate(WORDS)}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} "
    "{% if m['role'] == 'assistant' %}{{ eos_token }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def ids(text):
    """The ids of whitespace-separated words."""
    return [ID[w] for w in text.split()]


def word_tokenizer():
    """A ``PreTrainedTokenizerFast`` over :data:`WORDS`: BOS added to plain text, :data:`CHAT_TEMPLATE` set."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer

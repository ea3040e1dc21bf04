"""How a prompt becomes what a model reads: one rule for generation, every scorer, the reference log-prob stage and
training tokenization, so a response is sampled, scored and trained on after the same text.

The rule (:func:`as_chat`, :class:`PromptRule`): a chat prompt (a list of ``{"role", "content"}`` messages) goes
through the tokenizer's chat template. A plain string goes through it as one user message when ``chat_template`` is
on and the tokenizer has a template; otherwise it is the text as it is, and the tokenizer adds its own special tokens
(e.g. a BOS). A ``system`` prompt becomes the first message of every chat that does not start with a system message
of its own (so a prompt that already carries it, as a conversational pairs file does, is rendered alike); it needs a
chat, so a plain string without a template refuses it. ``kwargs`` are extra variables of the template (e.g.
``enable_thinking: false``) passed to every ``apply_chat_template`` call.

The policy's rule is :meth:`PromptRule.of` its config (``policy.chat_template``, ``policy.system_prompt``,
``policy.chat_template_kwargs``) for the policy and everything that scores the policy's own text (implicit rewards,
reference log-probs, training, a reward model with ``chat_template: policy``); a reward model reads the conversation
through its own template when it has one. Every function takes the rule as ``use_chat_template``: a
:class:`PromptRule`, or a bool (the rule with only ``chat_template``).

- :func:`prompt_ids` -- token ids of the prompt with the generation prompt: what an engine is given (tokenized once).
- :func:`split_ids` -- prompt and response ids, tokenized separately so the boundary is exact (training, log-probs).
- :func:`conversation_ids` -- the whole prompt + response as one sequence (reward models).

Functions take any ``transformers`` tokenizer (or an object with ``__call__``, ``apply_chat_template``,
``chat_template``, ``eos_token_id``); nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

Message = Dict[str, str]
Prompt = Union[str, List[Message]]

__all__ = [
    "PromptRule",
    "as_chat",
    "conversation_ids",
    "has_template",
    "messages",
    "prompt_ids",
    "prompt_text",
    "rule_of",
    "split_ids",
]


@dataclass(frozen=True)
class PromptRule:
    """The prompt rule of one model (see the module docstring).

    Attributes:
        chat_template: a plain prompt goes through the chat template (when the tokenizer has one).
        system: the system message put first in every chat without one; ``None``: none.
        kwargs: extra ``apply_chat_template`` keyword arguments: the template's own variables.
    """

    chat_template: bool = True
    system: Optional[str] = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, policy) -> "PromptRule":
        """The rule of a :class:`~rcs_ray.config.ModelConfig` (``chat_template``, ``system_prompt``,
        ``chat_template_kwargs``)."""
        return cls(
            chat_template=bool(policy.chat_template),
            system=getattr(policy, "system_prompt", None),
            kwargs=dict(getattr(policy, "chat_template_kwargs", None) or {}),
        )


Rule = Union[bool, PromptRule]


def rule_of(rule: Rule) -> PromptRule:
    """``rule`` as a :class:`PromptRule` (a bool is the rule with only ``chat_template``)."""
    return rule if isinstance(rule, PromptRule) else PromptRule(chat_template=bool(rule))


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def messages(name: str, value) -> List[Message]:
    """A chat-message list as plain dicts (Arrow / parquet may hand over numpy arrays or tuples of mappings).

    Raises:
        ValueError: not a non-empty sequence of mappings with ``role`` and ``content``.
    """
    if isinstance(value, Mapping):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{name}: expected a string or a list of chat messages, got {type(value).__name__}") from None
    if not items:
        raise ValueError(f"{name}: empty chat-message list")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{name}: message {i} is not a mapping with 'role' and 'content': {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def as_chat(prompt: Any, tokenizer, use_chat_template: Rule) -> Prompt:
    """The rule: a plain prompt as one user message when the rule's ``chat_template`` is on and the tokenizer has a
    template, else the string unchanged; a chat prompt as its messages; the rule's system message first in a chat
    that has none.

    Raises:
        ValueError: malformed messages; a system prompt for a plain prompt that is not read through a template.
    """
    rule = rule_of(use_chat_template)
    if isinstance(prompt, str):
        if not (rule.chat_template and has_template(tokenizer)):
            if rule.system is not None:
                raise ValueError(
                    "policy.system_prompt: a system prompt is a chat message, but this prompt is read "
                    "as plain text (policy.chat_template is off, or the tokenizer has no chat template)"
                )
            return prompt
        chat = [{"role": "user", "content": prompt}]
    else:
        chat = messages("prompt", prompt)
    if rule.system is not None and chat[0]["role"] != "system":
        chat = [{"role": "system", "content": rule.system}] + chat
    return chat


def _render(tokenizer, chat: List[Message], rule: PromptRule, **kwargs) -> str:
    """The chat through the tokenizer's template, with the rule's template variables."""
    return tokenizer.apply_chat_template(chat, tokenize=False, **rule.kwargs, **kwargs)


def _encode(tokenizer, text: str, add_special_tokens: bool) -> List[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]]


def prompt_text(tokenizer, prompt: Any, use_chat_template: Rule) -> str:
    """The text the policy continues: the chat template with its generation prompt, or the plain string."""
    rule = rule_of(use_chat_template)
    chat = as_chat(prompt, tokenizer, rule)
    if isinstance(chat, str):
        return chat
    return _render(tokenizer, chat, rule, add_generation_prompt=True)


def prompt_ids(tokenizer, prompt: Any, use_chat_template: Rule) -> List[int]:
    """Token ids of :func:`prompt_text`: a template writes its own special tokens, a plain string gets the
    tokenizer's."""
    rule = rule_of(use_chat_template)
    chat = as_chat(prompt, tokenizer, rule)
    if isinstance(chat, str):
        return _encode(tokenizer, chat, add_special_tokens=True)
    return _encode(tokenizer, prompt_text(tokenizer, chat, rule), add_special_tokens=False)


def prompt_ids_batch(tokenizer, prompts: Sequence[Any], use_chat_template: Rule) -> List[Any]:
    """:func:`prompt_ids` of each prompt, the texts tokenized in one call per kind (a fast tokenizer encodes a list
    in Rust, without Python per prompt); a prompt whose template or tokenization fails gets its exception instead."""
    rule = rule_of(use_chat_template)
    rendered: List[Any] = []
    for prompt in prompts:
        try:
            chat = as_chat(prompt, tokenizer, rule)
            rendered.append((chat, True) if isinstance(chat, str) else (prompt_text(tokenizer, chat, rule), False))
        except Exception as exc:  # noqa: BLE001 - this prompt only
            rendered.append(exc)
    out = list(rendered)
    for special in (True, False):
        at = [i for i, r in enumerate(rendered) if not isinstance(r, Exception) and r[1] == special]
        for i, ids in zip(at, encode_batch(tokenizer, [rendered[i][0] for i in at], special)):
            out[i] = ids
    return out


def encode_batch(tokenizer, texts: Sequence[str], add_special_tokens: bool) -> List[Any]:
    """Token ids of each text in one tokenizer call; a tokenizer that takes one text at a time (or a batch with a
    text it refuses) is asked one by one, and a text it refuses gets its exception."""
    if not texts:
        return []
    try:
        ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
        if len(ids) == len(texts) and all(isinstance(x, (list, tuple)) for x in ids):
            return [[int(t) for t in x] for x in ids]
    except Exception:  # noqa: BLE001 - one by one below
        pass
    out: List[Any] = []
    for text in texts:
        try:
            out.append(_encode(tokenizer, text, add_special_tokens))
        except Exception as exc:  # noqa: BLE001 - this text only
            out.append(exc)
    return out


def split_ids(
    tokenizer, prompt: Any, response: Any, use_chat_template: Rule, finished: bool = True
) -> Tuple[List[int], List[int]]:
    """Token ids of the prompt and of the response, tokenized separately (before any truncation).

    Plain prompt: the prompt with the tokenizer's special tokens, the response string without them, ending with EOS
    (appended unless it is there). Chat prompt: the prompt is the template with its generation prompt; the response
    (the assistant message content, or a list of messages) is the template's rendering of that turn, end-of-turn
    tokens included: the part of the whole conversation after the prompt. A response that did not finish (cut at
    the sampling token limit, ``finished=False``) ends where its text ends: no EOS, and the template's turn is left
    open (``continue_final_message``), so it is never read as a finished answer. A template whose generation prompt
    differs from how it renders the same turn inside a conversation (e.g. one that adds a think tag) is handled as TRL
    does: the prompt becomes the common prefix of the two renderings.

    Raises:
        ValueError: a plain prompt with a non-string response, no EOS (plain) or no chat template (chat), malformed
            messages.
    """
    rule = rule_of(use_chat_template)
    chat = as_chat(prompt, tokenizer, rule)
    if isinstance(chat, str):
        if not isinstance(response, str):
            raise ValueError(f"response: expected a string for a plain-string prompt, got {type(response).__name__}")
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("tokenizer: has no eos_token_id, needed to end a plain-text response")
        response_ids = _encode(tokenizer, response, add_special_tokens=False)
        if finished and (not response_ids or response_ids[-1] != eos):
            response_ids.append(int(eos))
        return _encode(tokenizer, chat, add_special_tokens=True), response_ids
    if not has_template(tokenizer):
        raise ValueError("tokenizer: has no chat_template, needed for a chat-message prompt")
    reply = (
        [{"role": "assistant", "content": response}] if isinstance(response, str) else messages("response", response)
    )
    first = _render(tokenizer, chat, rule, add_generation_prompt=True)
    full = _render(tokenizer, chat + reply, rule, **({} if finished else {"continue_final_message": True}))
    prefix = "".join(a for a, _ in takewhile(lambda ab: ab[0] == ab[1], zip(first, full)))
    # Chat templates write their own BOS / special tokens into the text: no tokenizer-added ones here.
    return _encode(tokenizer, prefix, False), _encode(tokenizer, full[len(prefix) :], False)


def conversation_ids(tokenizer, prompt: Any, response: str, use_chat_template: Rule = True) -> List[int]:
    """Token ids of prompt + response as one sequence, as a reward model reads it.

    Through the chat template (the prompt's messages, then the response as the assistant's turn) when the rule gives
    a chat and the tokenizer has a template; else the prompt's text (a chat's message contents joined by newlines)
    followed directly by the response, with the tokenizer's special tokens.
    """
    rule = rule_of(use_chat_template)
    chat = as_chat(prompt, tokenizer, rule)
    if isinstance(chat, list) and has_template(tokenizer):
        text = _render(tokenizer, chat + [{"role": "assistant", "content": response}], rule)
        return _encode(tokenizer, text, add_special_tokens=False)
    head = chat if isinstance(chat, str) else "\n".join(m["content"] for m in chat)
    return _encode(tokenizer, head + response, add_special_tokens=True)

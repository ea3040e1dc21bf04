"""The policy's config (``policy:``): the model every stage samples from and trains, and how prompts are rendered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from rcs_ray.config.fields import Checker, doc_field

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
# apply_chat_template arguments the prompt rule sets itself (rcs_ray.prompting): not policy.chat_template_kwargs
RULE_TEMPLATE_ARGS = (
    "conversation",
    "add_generation_prompt",
    "continue_final_message",
    "tokenize",
    "return_dict",
    "return_tensors",
    "return_assistant_tokens_mask",
    "padding",
    "truncation",
    "max_length",
    "chat_template",
    "tokenizer_kwargs",
)


@dataclass
class ModelConfig:
    """A local model in HF format (a directory ``from_pretrained`` can load), or a ``tinyworld:`` asset."""

    path: Optional[str] = doc_field(
        None,
        "The policy: a directory in HF format, a URI, a Hub ID or a tinyworld: "
        "asset; required by the commands that load the policy.",
    )
    tokenizer: Optional[str] = doc_field(None, "The tokenizer's directory or ID; None: the one at path.")
    dtype: str = doc_field("float32", "Weights' dtype when loaded for sampling: float32 | bfloat16 | float16.")
    trust_remote_code: bool = doc_field(False, "Load custom model code shipped with the model.")
    chat_template: bool = doc_field(True, "Format plain prompts with the tokenizer's chat template, if it has one.")
    system_prompt: Optional[str] = doc_field(
        None,
        "A system message put first in every prompt that has none (needs "
        "a chat template); read alike by generation, scoring and training.",
    )
    chat_template_kwargs: Dict[str, Any] = doc_field(
        factory=dict,
        doc="Extra template variables wherever the policy's template renders (e.g. enable_thinking: false).",
    )
    attn_implementation: Optional[str] = doc_field(
        None, "sdpa | eager | flash_attention_2 (CUDA + flash-attn); None: HF's default."
    )

    def check(self, c: Checker, key: str = "policy") -> None:
        """Choices, and a system prompt or template variables the prompt rule can honour.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        if self.attn_implementation is not None:
            c.choice(f"{key}.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.system_prompt is not None and not self.chat_template:
            c.fail(
                f"{key}.system_prompt",
                "a system prompt is a chat message: it needs policy.chat_template=true "
                "(plain prompts then become a system and a user message)",
            )
        for name in self.chat_template_kwargs:
            if name in ("system", "system_prompt", "system_message"):
                c.fail(
                    f"{key}.chat_template_kwargs.{name}",
                    "set policy.system_prompt instead: it becomes the "
                    "system message of every prompt (templates ignore this "
                    "variable)",
                )
            if name in RULE_TEMPLATE_ARGS:
                c.fail(
                    f"{key}.chat_template_kwargs.{name}",
                    "is set by the prompt rule itself; chat_template_kwargs "
                    "holds the template's own variables (e.g. "
                    "enable_thinking)",
                )

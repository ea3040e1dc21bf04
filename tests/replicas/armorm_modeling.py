"""A test replica of ArmoRM's custom model code (``modeling_custom.py`` of RLHFlow/ArmoRM-Llama3-8B-v0.1), written
from its public description: the same class name, config fields, parameters and output fields, so a loader that
works here reads a real ArmoRM the same way.

- a Llama backbone; the sequence end is the position before the first ``pad_token_id`` (right padding);
- ``regression_layer`` (hidden -> ``num_objectives``, no bias) gives ``rewards`` at the sequence end;
- a gating network reads the hidden state where the last ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>
  \\n\\n`` begins (ArmoRM hard-codes Llama 3's ids for it; this replica, with its tiny vocabulary, reads them from
  ``config.gating_token_pattern``) and weights ``rewards @ reward_transform_matrix`` into one ``score``;
- the output has ``rewards`` (B, num_objectives), ``score`` (B,) and ``logits`` = ``score``.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput


class GatingNetwork(nn.Module):
    def __init__(self, in_features, out_features, temperature=10.0, hidden_dim=1024, n_hidden=3):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1))
        sizes = [in_features] + [hidden_dim] * n_hidden
        self.layers = nn.ModuleList(
            [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])] + [nn.Linear(sizes[-1], out_features)]
        )

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return F.softmax(self.layers[-1](x) / self.temperature, dim=1) * self.logit_scale[0]


@dataclass
class CustomOutput(ModelOutput):
    rewards: torch.FloatTensor = None
    hidden_state: Optional[torch.FloatTensor] = None
    prompt_embedding: Optional[torch.FloatTensor] = None
    gating_output: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None


def _last_occurrence(ids, pattern):
    for j in range(len(ids) - len(pattern), -1, -1):
        if ids[j : j + len(pattern)] == pattern:
            return j
    raise ValueError("gating token pattern not found in the input")


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        cfg = config.to_dict()
        self.num_labels = config.num_labels
        self.num_objectives = cfg.get("num_objectives", 19)
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, self.num_objectives, bias=False)
        self.post_init()
        eye = torch.zeros(self.num_objectives, self.num_objectives)
        eye[range(self.num_objectives), range(self.num_objectives)] = 1.0
        self.reward_transform_matrix = nn.Parameter(eye, requires_grad=False)
        self.gating = GatingNetwork(
            config.hidden_size,
            self.num_objectives,
            temperature=cfg.get("gating_temperature", 10),
            hidden_dim=cfg.get("gating_hidden_dim", 1024),
            n_hidden=cfg.get("gating_n_hidden", 3),
        )
        self.token_pattern = list(cfg.get("gating_token_pattern") or [128009, 128006, 78191, 128007, 271])

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        hidden = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        ).last_hidden_state
        batch = torch.arange(input_ids.shape[0], device=hidden.device)
        ends = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        end_hidden = hidden[batch, ends]
        rewards = self.regression_layer(end_hidden)
        gates = [_last_occurrence(ids.tolist(), self.token_pattern) for ids in input_ids]
        prompt_embedding = hidden[batch, gates, :]
        gating_output = self.gating(prompt_embedding)
        score = torch.sum(gating_output * (rewards @ self.reward_transform_matrix), dim=1)
        return CustomOutput(
            rewards=rewards,
            hidden_state=end_hidden,
            prompt_embedding=prompt_embedding,
            gating_output=gating_output,
            score=score,
            logits=score,
        )

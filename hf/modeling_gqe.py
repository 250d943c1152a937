# Grouped Query Experts (GQE) for Hugging Face transformers: the attention of a `gqe export` of a
# GQE run, written by the gqe project (docs/model.md there) with the same math as its C++ model.
#
#   model = AutoModelForCausalLM.from_pretrained(export_dir, trust_remote_code=True)
#
# Everything but the attention is transformers' Llama (embedding, RMSNorm, SwiGLU, RoPE, the KV
# cache and generate()); each layer's attention is replaced by GqeAttention: per token and KV group
# a router picks top_k of the group's M query heads, only those attend to the group's keys and
# values (which stay dense, so the KV cache is GQA's), and the outputs fill o_proj's slots:
#   gqe              k*G hard slots, one weighted by the top-k probabilities renormalised across all
#                    groups, one always-on shared head over the groups' mean keys and values;
#   hard_concat      k*G hard slots;
#   weighted_concat  k*G slots, each times its raw top-k probability.
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM


class GqeConfig(LlamaConfig):
    model_type = "gqe"

    def __init__(self, gqe=None, **kwargs):
        # {"experts_per_group", "top_k", "variant", ...} as gqe export writes it
        self.gqe = dict(gqe or {"top_k": 1, "variant": "gqe"})
        super().__init__(**kwargs)


def rotate(x, cos, sin):
    # rotate-half RoPE; x [B, H, T, dh], cos/sin [B, T, dh]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def causal_attention(q, k, v, mask):
    # q [B, Hq, T, dh] (the last T of the Tk positions), k/v [B, Hq, Tk, dh]
    if mask is None:
        t, tk = q.shape[2], k.shape[2]
        mask = torch.arange(tk, device=q.device)[None, :] <= torch.arange(tk - t, tk, device=q.device)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(q.shape[-1]))


class GqeAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        d, dh = config.hidden_size, config.head_dim
        self.n_heads, self.groups, self.head_dim = config.num_attention_heads, config.num_key_value_heads, dh
        self.experts = self.n_heads // self.groups
        self.top_k = int(config.gqe["top_k"])
        self.variant = config.gqe["variant"]
        if self.variant not in ("gqe", "hard_concat", "weighted_concat"):
            raise ValueError(f"config.json: gqe.variant '{self.variant}' is not gqe, hard_concat or weighted_concat")
        slots = self.top_k * self.groups + (2 if self.variant == "gqe" else 0)
        self.q_proj = nn.Linear(d, self.n_heads * dh, bias=False)
        self.k_proj = nn.Linear(d, self.groups * dh, bias=False)
        self.v_proj = nn.Linear(d, self.groups * dh, bias=False)
        self.router = nn.Linear(d, self.groups * self.experts, bias=False)
        if self.variant == "gqe":
            self.q_shared = nn.Linear(d, dh, bias=False)
        self.o_proj = nn.Linear(slots * dh, d, bias=False)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        cache = cache if cache is not None else kwargs.get("past_key_values")
        x = hidden_states
        B, T, _ = x.shape
        G, M, K, dh = self.groups, self.experts, self.top_k, self.head_dim
        cos, sin = position_embeddings
        k = rotate(self.k_proj(x).view(B, T, G, dh).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(B, T, G, dh).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        mask = attention_mask if isinstance(attention_mask, torch.Tensor) else None

        # The router in fp32: softmax over each group's experts, then top-k (top-1: a max, ties to
        # the lower index, as gqe's).
        probs = F.linear(x.float(), self.router.weight.float()).view(B, T, G, M).softmax(-1)
        topv, topi = probs.max(-1, keepdim=True) if K == 1 else probs.topk(K, dim=-1, largest=True, sorted=True)

        # The selected experts' queries, head g*K + r of group g, then RoPE.
        q = self.q_proj(x).view(B, T, G, M, dh)
        picked = q.gather(3, topi.unsqueeze(-1).expand(B, T, G, K, dh)).reshape(B, T, G * K, dh).transpose(1, 2)
        o = causal_attention(rotate(picked, cos, sin), k.repeat_interleave(K, dim=1), v.repeat_interleave(K, dim=1), mask)
        routed = o.transpose(1, 2)  # [B, T, G*K, dh]
        if self.variant == "gqe":
            w = topv / topv.sum(dim=(2, 3), keepdim=True).clamp_min(1e-9)
            weighted = (routed * w.view(B, T, G * K, 1)).sum(2, keepdim=True).to(o.dtype)
            qs = rotate(self.q_shared(x).view(B, T, 1, dh).transpose(1, 2), cos, sin)
            shared = causal_attention(qs, k.mean(1, keepdim=True), v.mean(1, keepdim=True), mask)
            slots = torch.cat((routed, weighted, shared.transpose(1, 2)), dim=2)
        elif self.variant == "hard_concat":
            slots = routed
        else:
            slots = (routed.reshape(B, T, G, K, dh) * topv.unsqueeze(-1)).to(o.dtype)
        return self.o_proj(slots.reshape(B, T, -1)), None


class GqeForCausalLM(LlamaForCausalLM):
    config_class = GqeConfig

    def __init__(self, config):
        super().__init__(config)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = GqeAttention(config, i)
        self.post_init()

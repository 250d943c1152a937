#!/usr/bin/env python3
"""The eager-PyTorch reference for `gqe bench train`: the same training step in Python.

Builds the decoder of CONFIG (Llama-style: tied embeddings, RMSNorm, RoPE, SwiGLU, GQA through fused
SDPA; GQE with the router, top-k gather, weighted slot and shared head of docs/model.md) in plain
eager PyTorch, and times what `gqe bench train` times: forward on train.micro_batch_size x
data.seq_len random tokens, fp32 cross-entropy plus the balance term, backward, fused AdamW. Same
thread count, same median-of-steps after warm-up. design.md promises the C++ trainer is at least as
fast on the CPU; docs/performance.md has the numbers.

On a GPU (--device cuda) it runs under bf16 autocast, and --compile adds torch.compile: the bar
that hand-written LibTorch has to meet there.

Usage: bench_eager_pytorch.py CONFIG [--steps 10] [--warmup 2] [--device cuda] [--compile] [--profile]
"""
import argparse
import math
import os
import pathlib
import statistics
import time

import torch
import torch.nn.functional as F
import yaml
from torch import nn


def load_config(path):
    """The YAML with its `inherit:` chain merged (the override syntax of --set is not supported)."""
    path = pathlib.Path(path)
    own = yaml.safe_load(path.read_text()) or {}
    base = load_config(path.parent / own.pop("inherit")) if "inherit" in own else {}

    def merge(a, b):
        for key, value in b.items():
            a[key] = merge(a.get(key, {}), value) if isinstance(value, dict) else value
        return a

    return merge(base, own)


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.n, self.g, self.dh = m["n_heads"], m["n_kv_heads"], m["head_dim"]
        a = m.get("attention", {})
        self.gqe, self.k = a.get("type", "gqa") == "gqe", a.get("top_k", 1)
        self.variant = a.get("variant", "gqe")
        d = m["d_model"]
        self.q_proj = nn.Linear(d, self.n * self.dh, bias=False)
        self.k_proj = nn.Linear(d, self.g * self.dh, bias=False)
        self.v_proj = nn.Linear(d, self.g * self.dh, bias=False)
        slots = self.n
        if self.gqe:
            slots = self.g * self.k + (2 if self.variant == "gqe" else 0)
            self.router = nn.Linear(d, self.n, bias=False)
            if self.variant == "gqe":
                self.q_shared = nn.Linear(d, self.dh, bias=False)
        self.o_proj = nn.Linear(slots * self.dh, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        k = rotate(self.k_proj(x).view(B, T, self.g, self.dh).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(B, T, self.g, self.dh).transpose(1, 2)
        q = self.q_proj(x)
        if not self.gqe:
            q = rotate(q.view(B, T, self.n, self.dh).transpose(1, 2), cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), x.new_zeros(())
        G, M, K = self.g, self.n // self.g, self.k
        probs = self.router(x.float()).view(B, T, G, M).softmax(-1)
        topv, topi = probs.topk(K, -1)
        load = torch.zeros(G, M, device=x.device).scatter_add_(1, topi.permute(2, 0, 1, 3).reshape(G, -1),
                                              torch.ones(G, B * T * K, device=x.device)) / (B * T)
        aux = (load * probs.view(-1, G, M).mean(0)).sum(-1).mul(M).mean()
        q = q.view(B, T, G, M, self.dh).gather(3, topi.unsqueeze(-1).expand(B, T, G, K, self.dh))
        q = rotate(q.view(B, T, G * K, self.dh).transpose(1, 2), cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        o = o.transpose(1, 2).reshape(B, T, G, K, self.dh)
        w = topv.unsqueeze(-1)
        if self.variant == "weighted_concat":
            return self.o_proj((o * w).reshape(B, T, -1)), aux
        slots = [o.reshape(B, T, -1)]
        if self.variant == "gqe":
            slots.append((o * w / topv.sum((2, 3), keepdim=True).unsqueeze(-1).clamp_min(1e-9)).sum((2, 3)))
            q_sh = rotate(self.q_shared(x).view(B, T, 1, self.dh).transpose(1, 2), cos, sin)
            shared = F.scaled_dot_product_attention(q_sh, k.mean(1, keepdim=True), v.mean(1, keepdim=True),
                                                    is_causal=True)
            slots.append(shared.transpose(1, 2).reshape(B, T, -1))
        return self.o_proj(torch.cat(slots, -1)), aux


class Layer(nn.Module):
    def __init__(self, m):
        super().__init__()
        eps = m.get("norm_eps", 1e-5)
        self.input_norm, self.post_norm = RMSNorm(m["d_model"], eps), RMSNorm(m["d_model"], eps)
        self.attn = Attention(m)
        self.gate = nn.Linear(m["d_model"], m["ffn_hidden"], bias=False)
        self.up = nn.Linear(m["d_model"], m["ffn_hidden"], bias=False)
        self.down = nn.Linear(m["ffn_hidden"], m["d_model"], bias=False)

    def forward(self, h, cos, sin):
        a, aux = self.attn(self.input_norm(h), cos, sin)
        h = h + a
        x = self.post_norm(h)
        return h + self.down(F.silu(self.gate(x)) * self.up(x)), aux


class Decoder(nn.Module):
    def __init__(self, m, seq_len):
        super().__init__()
        self.embed = nn.Embedding(m["vocab_size"], m["d_model"])
        self.layers = nn.ModuleList(Layer(m) for _ in range(m["n_layers"]))
        self.norm = RMSNorm(m["d_model"], m.get("norm_eps", 1e-5))
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        dh = m["head_dim"]
        inv_freq = m.get("rope_theta", 10000.0) ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
        emb = torch.cat([angles, angles], -1)
        self.cos, self.sin = emb.cos().float(), emb.sin().float()

    def forward(self, tokens):
        h, aux = self.embed(tokens), []
        for layer in self.layers:
            h, a = layer(h, self.cos, self.sin)
            aux.append(a)
        return F.linear(self.norm(h), self.embed.weight), torch.stack(aux).sum()


def bench(config, attention, steps, warmup, device, compile_model, profile=False):
    m = dict(config["model"], attention=attention)
    seq_len, batch = config["data"]["seq_len"], config["train"].get("micro_batch_size", 16)
    torch.manual_seed(0)
    model = Decoder(m, seq_len).to(device)
    model.cos, model.sin = model.cos.to(device), model.sin.to(device)
    forward = torch.compile(model) if compile_model else model
    opt = config["train"].get("optimizer", {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(opt.get("beta1", 0.9), opt.get("beta2", 0.95)),
                                  eps=opt.get("eps", 1e-7), weight_decay=opt.get("weight_decay", 0.1), fused=True)
    tokens = torch.randint(m["vocab_size"], (batch, seq_len + 1)).to(device)
    cuda = device == "cuda"
    aux_coef = attention.get("aux_coef", 0.01) if attention.get("type") == "gqe" else 0.0

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, torch.bfloat16, enabled=cuda):
            logits, aux = forward(tokens[:, :seq_len])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1)) + aux_coef * aux
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if profile:  # where a step's time goes, by kernel
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(3):
                step()
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=30))
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    return seconds, batch * seq_len / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--profile", action="store_true", help="print the top operators of 3 profiled steps")
    args = parser.parse_args()
    config = load_config(args.config)
    threads = config["train"].get("threads", 0) or os.cpu_count()
    torch.set_num_threads(threads)
    a = config["model"].get("attention", {})
    gqe = dict(a, type="gqe") if a.get("type") == "gqe" else {"type": "gqe", "top_k": 1, "variant": "gqe"}
    print(f"eager PyTorch {torch.__version__}: {args.config}, micro-batch {config['train'].get('micro_batch_size', 16)}"
          f" x {config['data']['seq_len']} tokens, {'bf16 autocast' if args.device == 'cuda' else 'fp32'},"
          f" {args.device}{', torch.compile' if args.compile else ''}, {threads} threads, median of {args.steps} steps"
          f" after {args.warmup}")
    print(f"  {'attention':<18}{'step (ms)':>12}{'tokens/s':>14}")
    for name, attention in (("gqa", dict(a, type="gqa")), (f"gqe/{gqe.get('variant', 'gqe')}", gqe)):
        seconds, rate = bench(config, attention, args.steps, args.warmup, args.device, args.compile, args.profile)
        print(f"  {name:<18}{seconds * 1e3:>12.1f}{rate:>14.0f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch side of the training benchmark (issue 15): the same work as
`target/release/examples/bench_train` (all-MiniLM-L6-v2 fp32, a label-attention head over 50
labels, batch 16 x 64 tokens, full steps: forward with dropout 0.1, asymmetric loss, backward,
gradient clipping at 1.0, AdamW, EMA 0.999), in eager PyTorch on the CPU.

The encoder is BERT written here in plain PyTorch on the model's safetensors (no
`transformers`), with the attention Hugging Face uses by default
(`torch.nn.functional.scaled_dot_product_attention`), so nothing but torch is timed.

    pip install torch safetensors tokenizers numpy
    python3 scripts/bench_pytorch_train.py [--steps 12] [--tokens 64] [--threads 2]
        [--shared ../shared]
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

LABELS = 50
BATCH = 16


class Bert(torch.nn.Module):
    def __init__(self, weights, cfg):
        super().__init__()
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self.params = torch.nn.ParameterDict()
        for name, t in weights.items():
            if "pooler" in name or name.endswith("position_ids"):
                continue
            key = name[len(prefix):].replace(".", "__")
            self.params[key] = torch.nn.Parameter(t.float().clone())
        self.h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_eps"]
        self.p = 0.1

    def w(self, name):
        return self.params[name.replace(".", "__")]

    def ln(self, x, name):
        return F.layer_norm(x, (self.h,), self.w(name + ".weight"), self.w(name + ".bias"), self.eps)

    def lin(self, x, name):
        return F.linear(x, self.w(name + ".weight"), self.w(name + ".bias"))

    def forward(self, ids, mask):
        b, s = ids.shape
        x = (
            F.embedding(ids, self.w("embeddings.word_embeddings.weight"))
            + self.w("embeddings.position_embeddings.weight")[:s]
            + self.w("embeddings.token_type_embeddings.weight")[0]
        )
        x = F.dropout(self.ln(x, "embeddings.LayerNorm"), self.p, self.training)
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        hd = self.h // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            split = lambda t: t.view(b, s, self.heads, hd).transpose(1, 2)
            q = split(self.lin(x, p + "attention.self.query"))
            k = split(self.lin(x, p + "attention.self.key"))
            v = split(self.lin(x, p + "attention.self.value"))
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.p if self.training else 0.0
            )
            ctx = ctx.transpose(1, 2).reshape(b, s, self.h)
            a = F.dropout(self.lin(ctx, p + "attention.output.dense"), self.p, self.training)
            x = self.ln(a + x, p + "attention.output.LayerNorm")
            u = F.gelu(self.lin(x, p + "intermediate.dense"))
            o = F.dropout(self.lin(u, p + "output.dense"), self.p, self.training)
            x = self.ln(o + x, p + "output.LayerNorm")
        return x


class Classifier(torch.nn.Module):
    """Label attention: one query per label over the token states, one shared scorer."""

    def __init__(self, encoder, h):
        super().__init__()
        self.encoder = encoder
        self.queries = torch.nn.Parameter(torch.randn(LABELS, h) * 0.02)
        self.score = torch.nn.Linear(h, 1)

    def forward(self, ids, mask):
        hs = self.encoder(ids, mask)
        scores = torch.einsum("lh,bsh->bls", self.queries, hs) / math.sqrt(hs.shape[-1])
        scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
        reps = torch.einsum("bls,bsh->blh", scores.softmax(-1), hs)
        reps = F.dropout(reps, 0.1, self.training)
        return self.score(reps).squeeze(-1)


def asl(logits, targets, gamma_neg=4.0, clip=0.05):
    p = torch.sigmoid(logits)
    pn = (p - clip).clamp(min=0)
    pos = targets * torch.log(p.clamp(min=1e-8))
    neg = (1 - targets) * torch.log((1 - pn).clamp(min=1e-8)) * pn.pow(gamma_neg)
    return -(pos + neg).sum() / logits.shape[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared", default=os.environ.get("TTPMAP_SHARED", "../shared"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model_dir = os.path.join(args.shared, "models", "all-MiniLM-L6-v2")
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(args.tokens)
    tok.enable_padding()
    base = (
        "The actor used PowerShell to download a second-stage payload from a remote server and "
        "created a scheduled task for persistence while dumping credentials from LSASS memory"
    )
    enc = tok.encode_batch([f"{i} {base} {base}" for i in range(BATCH)])
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    targets = torch.tensor(
        [[1.0 if (r * LABELS + c) % 17 == 0 else 0.0 for c in range(LABELS)] for r in range(BATCH)]
    )
    print(
        f"PyTorch {torch.__version__} training throughput, batch {BATCH} x {ids.shape[1]} tokens, "
        f"{LABELS} labels, {args.steps} timed steps, {args.threads} threads"
    )
    for freeze in (False, True):
        model = Classifier(Bert(weights, cfg), cfg["hidden_size"])
        model.train()
        word = model.encoder.w("embeddings.word_embeddings.weight")
        word.requires_grad_(not freeze)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
        ema = [p.detach().clone() for p in params]

        def step():
            opt.zero_grad(set_to_none=True)
            loss = asl(model(ids, mask), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.999)
            return float(loss.detach())

        for _ in range(2):
            step()
        t = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        s = time.perf_counter() - t
        assert math.isfinite(loss)
        print(
            f"word embeddings {'frozen   ' if freeze else 'trainable'}: {s / args.steps:.3f} s/step, "
            f"{args.steps * BATCH / s:.1f} examples/s"
        )


if __name__ == "__main__":
    main()

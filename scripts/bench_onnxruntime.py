#!/usr/bin/env python3
"""ONNX Runtime side of the encoder benchmark (issue 15): the same work as
`target/release/examples/bench_encode` (the first N TRAM2 test sentences, all-MiniLM-L6-v2 fp32,
batches of 32 in the given order and sorted by length, mean pooling + L2 norm, 2 threads).

No PyTorch is needed (none installs on our machines): the BERT graph is written here with
`onnx.helper` from the model's safetensors, in the operators `torch.onnx.export` emits at
opset 17 (Gather, MatMul, Add, LayerNormalization, Softmax, Erf-based GELU), and ONNX Runtime
runs it with its default graph optimisations (ORT_ENABLE_ALL). The graph is checked against the
PyTorch reference in ../shared/reference/all-MiniLM-L6-v2.json before timing.

    pip install onnxruntime onnx safetensors tokenizers numpy
    python3 scripts/bench_onnxruntime.py [--sentences 2000] [--batch 32] [--threads 2]
        [--shared ../shared]
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def build_graph(weights, cfg):
    h = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    hd = h // heads
    eps = cfg["layer_norm_eps"]
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    inits, nodes = [], []
    counter = [0]

    def w(name):
        return prefix + name

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, **attrs):
        counter[0] += 1
        out = f"{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    for name, array in weights.items():
        if "pooler" in name or name.endswith("position_ids"):
            continue
        if name.endswith(".weight") and array.ndim == 2 and "embeddings" not in name:
            const(name, array.T.copy())  # MatMul wants [in, out]
        else:
            const(name, array)

    def linear(x, name):
        return node("Add", [node("MatMul", [x, w(name + ".weight")]), w(name + ".bias")])

    def layer_norm(x, name):
        return node("LayerNormalization", [x, w(name + ".weight"), w(name + ".bias")],
                    axis=-1, epsilon=eps)

    ids, mask = "input_ids", "attention_mask"
    seq = node("Shape", [ids], start=1, end=2)
    positions = node("Range", [const("zero", np.array(0, np.int64)),
                               node("Squeeze", [seq, const("axis0", np.array([0], np.int64))]),
                               const("one", np.array(1, np.int64))])
    x = node("Add", [node("Gather", [w("embeddings.word_embeddings.weight"), ids]),
                     node("Gather", [w("embeddings.position_embeddings.weight"), positions])])
    x = node("Add", [x, node("Gather", [w("embeddings.token_type_embeddings.weight"),
                                        node("Mul", [ids, const("zero_ids",
                                                                np.array(0, np.int64))])])])
    x = layer_norm(x, "embeddings.LayerNorm")
    # [b, s] -> [b, 1, 1, s] additive mask.
    fmask = node("Cast", [mask], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("onef", np.array(1.0, np.float32)), fmask]),
                        const("neg", np.array(-1e9, np.float32))])
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))])
    split_shape = const("split_shape", np.array([0, 0, heads, hd], np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, h], np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(hd), np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def heads_of(t):
            return node("Transpose", [node("Reshape", [t, split_shape])], perm=[0, 2, 1, 3])

        q = heads_of(linear(x, p + "attention.self.query"))
        k = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.key"),
                                                split_shape])], perm=[0, 2, 3, 1])
        v = heads_of(linear(x, p + "attention.self.value"))
        scores = node("Add", [node("Mul", [node("MatMul", [q, k]), scale]), bias])
        ctx = node("MatMul", [node("Softmax", [scores], axis=-1), v])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(node("Add", [linear(ctx, p + "attention.output.dense"), x]),
                       p + "attention.output.LayerNorm")
        inter = linear(x, p + "intermediate.dense")
        gelu = node("Mul", [node("Mul", [inter, const(f"half{i}", np.array(0.5, np.float32))]),
                            node("Add", [node("Erf", [node("Div", [inter, const(
                                f"sqrt2_{i}", np.array(math.sqrt(2.0), np.float32))])]),
                                         const(f"onef{i}", np.array(1.0, np.float32))])])
        x = layer_norm(node("Add", [linear(gelu, p + "output.dense"), x]),
                       p + "output.LayerNorm")
    nodes[-1].output[0] = "last_hidden_state"
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["b", "s"]),
         helper.make_tensor_value_info(mask, TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", h])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def tram2_sentences(path, n):
    column = json.load(open(path))["sentence"]
    rows = sorted(((int(k), v) for k, v in column.items()), key=lambda kv: kv[0])
    return [v for _, v in rows[:n]]


def encode(session, tok, texts, batch, sort):
    order = list(range(len(texts)))
    encodings = tok.encode_batch(texts)
    if sort:
        order.sort(key=lambda i: len(encodings[i].ids))
    out = [None] * len(texts)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        longest = max(len(encodings[i].ids) for i in idx)
        ids = np.zeros((len(idx), longest), np.int64)
        mask = np.zeros((len(idx), longest), np.int64)
        for r, i in enumerate(idx):
            e = encodings[i].ids
            ids[r, :len(e)] = e
            mask[r, :len(e)] = 1
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / m.sum(1)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        for r, i in enumerate(idx):
            out[i] = pooled[r]
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared", default=os.environ.get(
        "TTPMAP_SHARED", os.path.join(here, "..", "..", "shared")))
    args = ap.parse_args()
    model_dir = os.path.join(args.shared, "models", "all-MiniLM-L6-v2")
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    model = build_graph(load_file(os.path.join(model_dir, "model.safetensors")), cfg)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "minilm.onnx")
        onnx.save(model, path)
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.no_padding()

    # Numeric check against the PyTorch reference (each sentence alone).
    ref = json.load(open(os.path.join(args.shared, "reference", "all-MiniLM-L6-v2.json")))
    for s in ref["sentences"]:
        got = encode(session, tok, [s["text"]], 1, False)[0]
        want = np.array(s["mean_pooled"], np.float32)
        want /= np.linalg.norm(want)
        diff = float(np.abs(got - want).max())
        if diff > 1e-4:
            sys.exit(f"ONNX graph disagrees with the PyTorch reference: max |diff| {diff}")

    texts = tram2_sentences(os.path.join(args.shared, "data", "tram2", "test.json"),
                            args.sentences)
    tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
    print(f"{len(texts)} sentences, batch {args.batch}, ONNX Runtime {ort.__version__} "
          f"fp32, intra_op {args.threads}; graph matches the PyTorch reference within 1e-4")
    for sort in (False, True):
        encode(session, tok, texts[:args.batch], args.batch, sort)  # warm-up
        start = time.perf_counter()
        vectors = encode(session, tok, texts, args.batch, sort)
        secs = time.perf_counter() - start
        assert len(vectors) == len(texts)
        assert all(np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-3 for v in vectors)
        label = "length-sorted" if sort else "given order"
        print(f"{label:>13}: {len(texts) / secs:7.1f} sentences/s ({secs:.2f} s), "
              f"mean tokens {tokens / len(texts):.1f}")


if __name__ == "__main__":
    main()

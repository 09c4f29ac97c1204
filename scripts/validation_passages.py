#!/usr/bin/env python3
"""Passages of consecutive validation sentences, ranked: how the default model reads a text
of several sentences (`ttpmap rank`, emulation steps).

`build` cuts each validation report of a dump (`ttpmap train default --package-only
--dump-validation DUMP ...`, JSON lines {doc, text, gold, scores}) into passages of K
consecutive sentences and keeps those with a gold technique; it writes PREFIX.jsonl (the
passages' {id, text}, the input of the `score_passages` example) and PREFIX.gold.json.
`compare` scores two rankings of them (the example's output) by P@1 (the first technique is
one of the passage's gold techniques), P@1 against the first gold technique of the first
labelled sentence, and Hit@5, and runs a paired bootstrap of P@1 over reports (2,000
resamples, seed 42). TRAM2 passages are ranked on TRAM2's techniques only (those its
validation sentences are scored on in the dump), as in validation.

    python3 scripts/validation_passages.py build val.jsonl 5 /tmp/p5
    cargo run --release -p ttpmap-ml --example score_passages -- --whole < /tmp/p5.jsonl > whole.jsonl
    cargo run --release -p ttpmap-ml --example score_passages < /tmp/p5.jsonl > read.jsonl
    python3 scripts/validation_passages.py compare /tmp/p5.gold.json whole.jsonl read.jsonl
"""
import collections
import json
import random
import sys


def build(dump, k, prefix):
    docs = collections.OrderedDict()
    with open(dump) as f:
        for line in f:
            r = json.loads(line)
            if "text" not in r:
                sys.exit(f"{dump}: no sentence text (dump it again with this version of ttpmap)")
            docs.setdefault(r["doc"], []).append(r)
    space = sorted({t for d, rows in docs.items() if d.startswith("tram2:")
                    for r in rows for t in [x for x, _ in r["scores"]] + r["gold"]})
    passages = []
    for doc, rows in docs.items():
        for i in range(0, len(rows), k):
            part = rows[i:i + k]
            labelled = [r["gold"] for r in part if r["gold"]]
            if not labelled:
                continue
            passages.append({
                "id": f"{doc}#{i}",
                "doc": doc,
                "text": " ".join(r["text"] for r in part),
                "gold": sorted(set().union(*map(set, labelled))),
                "first": sorted(labelled[0])[0],
            })
    with open(prefix + ".jsonl", "w") as f:
        for p in passages:
            f.write(json.dumps({"id": p["id"], "text": p["text"]}) + "\n")
    with open(prefix + ".gold.json", "w") as f:
        json.dump({"tram2_space": space, "passages": passages}, f)
    print(f"{len(passages)} passages of {k} sentences from {len(docs)} reports: "
          f"{prefix}.jsonl, {prefix}.gold.json")


def hits(gold_file, ranked_file):
    g = json.load(open(gold_file))
    space = set(g["tram2_space"])
    ranked = {}
    with open(ranked_file) as f:
        for line in f:
            r = json.loads(line)
            ranked[r["id"]] = r
    out = []
    for p in g["passages"]:
        r = ranked[p["id"]]
        ids = [t for t, _ in r["top"]]
        if p["doc"].startswith("tram2:"):
            ids = [t for t in ids if t in space]
        out.append((p["doc"], bool(ids) and ids[0] in p["gold"],
                    bool(ids) and ids[0] == p["first"], bool(set(ids[:5]) & set(p["gold"])),
                    r["tokens"]))
    return out


def compare(gold_file, a_file, b_file):
    a, b = hits(gold_file, a_file), hits(gold_file, b_file)
    n = len(a)
    longer = sum(x[4] > 64 for x in a)
    for name, h in (("A", a), ("B", b)):
        print(f"{name}: {n} passages ({longer} over 64 tokens): P@1 {100 * sum(x[1] for x in h) / n:.1f}, "
              f"P@1 first label {100 * sum(x[2] for x in h) / n:.1f}, "
              f"Hit@5 {100 * sum(x[3] for x in h) / n:.1f}")
    for col, what in ((1, "P@1"), (2, "P@1 first label")):
        per = collections.defaultdict(list)
        for x, y in zip(a, b):
            per[x[0]].append(y[col] - x[col])
        keys = list(per)
        rng = random.Random(42)
        diffs = []
        for _ in range(2000):
            s = [rng.choice(keys) for _ in keys]
            diffs.append(100 * sum(sum(per[d]) for d in s) / sum(len(per[d]) for d in s))
        diffs.sort()
        mean = 100 * sum(sum(v) for v in per.values()) / n
        print(f"B - A {what}: {mean:+.2f} [{diffs[50]:.2f}, {diffs[1949]:.2f}] over "
              f"{len(keys)} reports, B ahead in {100 * sum(d > 0 for d in diffs) / 2000:.1f}%")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "build":
        build(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "compare":
        compare(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Scores rankings of the held-out ATT&CK procedure examples (the ones the default model never
trains on: `cargo run --release -p ttpmap-ml --example heldout_procedures > heldout.jsonl`),
each ranked by `score_passages` (`--model DIR < heldout.jsonl > ranked.jsonl`).

    python3 scripts/heldout_procedures.py heldout.jsonl A.jsonl [B.jsonl]
        [--techniques T1059.001,T1053.005]

Prints, per ranking: P@1 (the first technique is one of the text's techniques), the same with
ids collapsed to their parents, Hit@5, and mean reciprocal rank over the 20 candidates; with
two rankings, the paired bootstrap of B - A (2,000 resamples of texts, seed 42). Also per
technique (`--techniques`, or the 10 most frequent): recall@1 of its texts. Every figure is a
mean over texts, so the popular techniques weigh most: this set measures how the model reads
ATT&CK-style sentences about them, not a report.
"""
import json
import random
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def parent(t):
    return t.split(".")[0]


def per_text(gold, ranked):
    """[(p1, p1_parent, hit5, rr, first)] per text, in gold order."""
    by_id = {r["id"]: r for r in ranked}
    out = []
    for g in gold:
        r = by_id.get(g["id"])
        if r is None:
            sys.exit(f"ranking lacks text {g['id']}")
        top = [t for t, _ in r["top"]]
        labels = set(g["labels"])
        parents = {parent(t) for t in labels}
        first = top[0] if top else None
        rank = next((i for i, t in enumerate(top) if t in labels), None)
        out.append(
            (
                float(first in labels),
                float(first is not None and parent(first) in parents),
                float(rank is not None and rank < 5),
                0.0 if rank is None else 1.0 / (rank + 1),
                first,
            )
        )
    return out


def means(rows):
    n = len(rows)
    return [100.0 * sum(r[i] for r in rows) / n for i in range(4)]


def bootstrap(a, b, col, resamples=2000, seed=42):
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(100.0 * sum(b[i][col] - a[i][col] for i in idx) / n)
    diffs.sort()
    ahead = sum(d > 0 for d in diffs) / len(diffs)
    return diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1], ahead


def main():
    args = sys.argv[1:]
    techniques = None
    if "--techniques" in args:
        i = args.index("--techniques")
        techniques = args[i + 1].split(",")
        del args[i : i + 2]
    if len(args) not in (2, 3):
        sys.exit(__doc__)
    gold = load(args[0])
    runs = [(p, per_text(gold, load(p))) for p in args[1:]]
    print(f"{len(gold)} held-out texts")
    print("ranking | P@1 | P@1 parent | Hit@5 | MRR@20")
    for path, rows in runs:
        m = means(rows)
        print(f"{path} | " + " | ".join(f"{v:.2f}" for v in m))
    if len(runs) == 2:
        (_, a), (_, b) = runs
        for col, name in [(0, "P@1"), (1, "P@1 parent"), (2, "Hit@5")]:
            lo, hi, ahead = bootstrap(a, b, col)
            d = means(b)[col] - means(a)[col]
            print(f"B - A {name}: {d:+.2f} [{lo:.2f}, {hi:.2f}], ahead in {100 * ahead:.1f}%")
    if techniques is None:
        count = {}
        for g in gold:
            for t in g["labels"]:
                count[t] = count.get(t, 0) + 1
        techniques = sorted(count, key=lambda t: -count[t])[:10]
    print("technique | texts | " + " | ".join(f"recall@1 {p}" for p, _ in runs))
    for t in techniques:
        idx = [i for i, g in enumerate(gold) if t in g["labels"]]
        cells = [
            f"{100.0 * sum(rows[i][4] == t for i in idx) / max(len(idx), 1):.1f}"
            for _, rows in runs
        ]
        print(f"{t} | {len(idx)} | " + " | ".join(cells))


if __name__ == "__main__":
    main()

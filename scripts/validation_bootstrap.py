#!/usr/bin/env python3
"""Paired bootstrap of two document decisions on the default model's validation reports.

Each side is DUMP:RULE:THRESHOLD, where DUMP is a file written by
`ttpmap train default --package-only --dump-validation DUMP ...` (JSON lines {doc, text, gold, scores}:
calibrated sentence scores with the chosen evidence weights and implied parents, TRAM2 reports
already restricted to TRAM2's labels) and RULE is `max` (any sentence at the threshold) or
`noisyorK` (noisy-OR of a technique's K best sentence scores). Per-document F1 is the mean over
reports with gold labels; the bootstrap resamples reports (seed 42).

    python3 scripts/validation_bootstrap.py a.jsonl:max:0.22 a.jsonl:noisyor3:0.36
"""
import collections
import json
import math
import random
import sys


def load(path):
    docs = collections.OrderedDict()
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            d = docs.setdefault(r["doc"], {"gold": set(), "s": collections.defaultdict(list)})
            d["gold"] |= set(r["gold"])
            for t, p in r["scores"]:
                d["s"][t].append(p)
    return docs


def confidence(scores, rule):
    if rule == "max":
        return max(scores)
    if rule.startswith("noisyor"):
        k = int(rule[len("noisyor"):])
        return 1 - math.prod(1 - p for p in sorted(scores)[-k:])
    sys.exit(f"unknown rule {rule!r} (max or noisyorK)")


def f1(pred, gold):
    c = len(pred & gold)
    if c == 0:
        return 0.0
    p, r = c / len(pred), c / len(gold)
    return 2 * p * r / (p + r)


def per_doc(spec):
    path, rule, threshold = spec.rsplit(":", 2)
    t = float(threshold)
    return {
        k: f1({x for x, v in d["s"].items() if confidence(v, rule) >= t}, d["gold"])
        for k, d in load(path).items()
        if d["gold"]
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = per_doc(sys.argv[1]), per_doc(sys.argv[2])
    keys = sorted(set(a) & set(b))
    if not keys:
        sys.exit("no report with gold labels in both")
    rng = random.Random(42)
    diffs = []
    for _ in range(2000):
        s = [rng.choice(keys) for _ in keys]
        diffs.append(sum(b[k] - a[k] for k in s) / len(s))
    diffs.sort()
    mean = lambda d: 100 * sum(d[k] for k in keys) / len(keys)
    print(f"{len(keys)} reports: A {mean(a):.2f}, B {mean(b):.2f}, B - A "
          f"{mean(b) - mean(a):+.2f} [{100 * diffs[50]:.2f}, {100 * diffs[1949]:.2f}], "
          f"B ahead in {100 * sum(x > 0 for x in diffs) / len(diffs):.1f}% of 2000 resamples")


if __name__ == "__main__":
    main()

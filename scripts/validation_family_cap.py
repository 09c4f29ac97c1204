#!/usr/bin/env python3
"""Validation per-document F1 of the default model under extraction's per-sentence family cap.

`ttpmap extract` keeps, in each sentence, the techniques of at most `max_per_sentence` technique
families (a technique and its sub-techniques count once, default 3), after the document rule has
raised each technique's best sentence to the document confidence; `eval` and `package` score the
sentence candidates without that cap. This replays both on a dump written by
`ttpmap train default --package-only --dump-validation DUMP ...` (JSON lines {doc, text, gold, scores},
see scripts/validation_bootstrap.py) with the noisy-OR of the best 3 sentences, for caps 1-5 and
none. Note: TRAM2 rows in the dump are already restricted to TRAM2's labels, so a capped family
outside them is not counted there (the cap is slightly kinder than in extraction on TRAM2).

    python3 scripts/validation_family_cap.py DUMP THRESHOLD
"""
import collections
import json
import math
import sys


def run(path, threshold, cap, top=3):
    docs = collections.OrderedDict()
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            docs.setdefault(r["doc"], []).append(r)
    f1s = []
    for rows in docs.values():
        gold = set().union(*(set(r["gold"]) for r in rows))
        if not gold:
            continue
        scores = [[list(x) for x in r["scores"]] for r in rows]
        by_technique = collections.defaultdict(list)
        for i, row in enumerate(scores):
            for j, (t, p) in enumerate(row):
                by_technique[t].append((p, i, j))
        for entries in by_technique.values():
            entries.sort(reverse=True)
            q = 1 - math.prod(1 - p for p, _, _ in entries[:top])
            _, i, j = entries[0]
            scores[i][j][1] = q
        pred = set()
        for row in scores:
            kept = sorted(
                (x for x in row if x[1] >= threshold),
                key=lambda x: (-x[1], "." not in x[0], x[0]),
            )
            families = set()
            for t, _ in kept:
                family = t.split(".")[0]
                if family in families or len(families) < cap:
                    families.add(family)
                    pred.add(t)
        c = len(pred & gold)
        f1s.append(0.0 if c == 0 else 2 * c / (len(pred) + len(gold)))
    return 100 * sum(f1s) / len(f1s)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, threshold = sys.argv[1], float(sys.argv[2])
    for cap in [1, 2, 3, 4, 5, None]:
        f1 = run(path, threshold, cap if cap is not None else 10**9)
        print(f"max_per_sentence {cap if cap is not None else 'none'}: {f1:.2f}")


if __name__ == "__main__":
    main()

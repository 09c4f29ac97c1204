//! Data for the cross-encoder reranker (issue 5): the candidate text of a technique under a
//! recorded format config, queries grouped by text ([`queries_from_steps`]), the published
//! protocol's fixed-size candidate sets (gold + negatives drawn at random or from BM25,
//! [`candidate_set`], [`candidate_sets`] over a BM25 index), training pairs (gold + hard
//! negatives, sampled 1:2.5) and the procedure-example queries that augment reranker training
//! ([`procedure_queries`]).
//!
//! Invariants: a [`CandidateSet`] holds every gold technique of its query exactly once and
//! `min(k, pool)` candidates in all, in a seeded shuffled order (so candidate position carries
//! no signal); the same query, config and pool always give the same set.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::attack::{Catalog, ProcedureExample, Technique};
use crate::dataset::EmulationStep;
use crate::retrieve::Bm25Index;
use crate::TechniqueId;

/// How a technique is rendered as the second segment of a reranker pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateTextConfig {
    /// Append the tactics (default false).
    pub tactic: bool,
    /// Number of leading description sentences appended (default 1).
    pub description_sentences: usize,
}

impl Default for CandidateTextConfig {
    fn default() -> Self {
        Self {
            tactic: false,
            description_sentences: 1,
        }
    }
}

/// `"T1059.001 - PowerShell"`, then optionally `" (execution)"` and `". First sentence."`.
pub fn candidate_text(t: &Technique, cfg: &CandidateTextConfig) -> String {
    let mut s = format!("{} - {}", t.id, t.name);
    if cfg.tactic && !t.tactics.is_empty() {
        s.push_str(&format!(" ({})", t.tactics.join(", ")));
    }
    if cfg.description_sentences > 0 {
        let mut taken = Vec::new();
        let mut rest = t.description.trim();
        while taken.len() < cfg.description_sentences && !rest.is_empty() {
            let end = rest.find(". ").map(|i| i + 1).unwrap_or(rest.len());
            taken.push(rest[..end].trim());
            rest = rest[end..].trim_start();
        }
        if !taken.is_empty() {
            s.push_str(". ");
            s.push_str(&taken.join(" "));
        }
    }
    s
}

/// One reranker training pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub query: String,
    pub technique: TechniqueId,
    /// 1.0 for a gold technique, 0.0 for a negative.
    pub label: f32,
}

/// Gold techniques as positives plus hard negatives taken from `candidates` (retrieval order,
/// e.g. BM25 top-K), at most `round(n_gold * neg_ratio)` negatives, sampled with `seed`.
pub fn build_pairs(
    query: &str,
    gold: &BTreeSet<TechniqueId>,
    candidates: &[TechniqueId],
    neg_ratio: f64,
    seed: u64,
) -> Vec<Pair> {
    let mut out: Vec<Pair> = gold
        .iter()
        .map(|t| Pair {
            query: query.to_string(),
            technique: t.clone(),
            label: 1.0,
        })
        .collect();
    let mut negs: Vec<&TechniqueId> = candidates.iter().filter(|c| !gold.contains(*c)).collect();
    negs.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = (gold.len() as f64 * neg_ratio.max(0.0)).round() as usize;
    out.extend(negs.into_iter().take(n).map(|t| Pair {
        query: query.to_string(),
        technique: t.clone(),
        label: 0.0,
    }));
    out
}

/// How the negatives of a candidate set are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NegativeSampling {
    /// Uniformly from the active techniques that are not gold (the easier protocol).
    Random,
    /// The highest-ranked non-gold techniques of BM25 over the catalog (hard negatives).
    Bm25,
}

/// The published protocol's candidate sets: `k` candidates per query, gold included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateSetConfig {
    /// Candidates per query, gold included (default 20, as the published work).
    pub k: usize,
    /// How negatives are drawn (default BM25 hard negatives).
    pub negatives: NegativeSampling,
    /// Seed of the random negatives and of the candidate order (default 42).
    pub seed: u64,
}

impl Default for CandidateSetConfig {
    fn default() -> Self {
        Self {
            k: 20,
            negatives: NegativeSampling::Bm25,
            seed: 42,
        }
    }
}

/// A reranking query: one unique query text with every technique any step gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerankQuery {
    /// `actor/step_id` of the first step with this text.
    pub id: String,
    /// Actor of the first step (the per-actor breakdown's group).
    pub actor: String,
    pub query: String,
    pub gold: BTreeSet<TechniqueId>,
}

/// Groups emulation steps by query text ([`EmulationStep::query`]): one [`RerankQuery`] per
/// text, gold = the union of the steps' techniques, in first-occurrence order.
pub fn queries_from_steps(steps: &[EmulationStep]) -> Vec<RerankQuery> {
    let mut order: Vec<RerankQuery> = Vec::new();
    let mut pos: BTreeMap<String, usize> = BTreeMap::new();
    for s in steps {
        let text = s.query();
        match pos.get(&text) {
            Some(&i) => {
                order[i].gold.insert(s.technique.clone());
            }
            None => {
                pos.insert(text.clone(), order.len());
                order.push(RerankQuery {
                    id: format!("{}/{}", s.actor, s.step_id),
                    actor: s.actor.clone(),
                    query: text,
                    gold: BTreeSet::from([s.technique.clone()]),
                });
            }
        }
    }
    order
}

/// A query with its candidates (gold included, shuffled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateSet {
    #[serde(flatten)]
    pub query: RerankQuery,
    pub candidates: Vec<TechniqueId>,
}

/// FNV-1a of a string: a per-query seed that does not depend on the query's position.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The candidate set of `q`: its gold techniques plus `k - |gold|` negatives, taken in order
/// from `bm25_ranked` (BM25 over the catalog, best first) or drawn at random from `pool` (the
/// active techniques), then shuffled. Seeded by `cfg.seed` and the query text.
pub fn candidate_set(
    q: &RerankQuery,
    bm25_ranked: &[TechniqueId],
    pool: &[TechniqueId],
    cfg: &CandidateSetConfig,
) -> CandidateSet {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ fnv1a(&q.query));
    let n_neg = cfg.k.saturating_sub(q.gold.len());
    let mut candidates: Vec<TechniqueId> = q.gold.iter().cloned().collect();
    let mut taken: BTreeSet<TechniqueId> = q.gold.clone();
    let mut push = |t: &TechniqueId, candidates: &mut Vec<TechniqueId>| {
        if candidates.len() < q.gold.len() + n_neg && taken.insert(t.clone()) {
            candidates.push(t.clone());
        }
    };
    if cfg.negatives == NegativeSampling::Bm25 {
        for t in bm25_ranked {
            push(t, &mut candidates);
        }
    }
    // Random negatives, or BM25's shortfall when few techniques share a term with the query.
    let mut rest: Vec<&TechniqueId> = pool.iter().collect();
    rest.shuffle(&mut rng);
    for t in rest {
        push(t, &mut candidates);
    }
    candidates.shuffle(&mut rng);
    CandidateSet {
        query: q.clone(),
        candidates,
    }
}

/// Fractions of the emulation query split (train, validation, test).
pub const SPLIT_FRACTIONS: (f64, f64, f64) = (0.8, 0.1, 0.1);

/// Active technique ids, sorted (the pool random negatives are drawn from).
pub fn active_pool(catalog: &Catalog) -> Vec<TechniqueId> {
    let mut v: Vec<TechniqueId> = catalog.active_techniques().map(|t| t.id.clone()).collect();
    v.sort();
    v
}

/// The published protocol's candidate set of each query (BM25 over `index` ranks the
/// hard negatives; see [`candidate_set`]).
pub fn candidate_sets(
    queries: &[RerankQuery],
    index: &Bm25Index,
    pool: &[TechniqueId],
    cfg: &CandidateSetConfig,
) -> Vec<CandidateSet> {
    queries
        .iter()
        .map(|q| {
            let ranked: Vec<TechniqueId> = index
                .search(&q.query, cfg.k + q.gold.len())
                .into_iter()
                .map(|h| h.technique)
                .collect();
            candidate_set(q, &ranked, pool, cfg)
        })
        .collect()
}

/// The candidate text of every active technique under `cfg`.
pub fn candidate_texts(
    catalog: &Catalog,
    cfg: &CandidateTextConfig,
) -> BTreeMap<TechniqueId, String> {
    catalog
        .active_techniques()
        .map(|t| (t.id.clone(), candidate_text(t, cfg)))
        .collect()
}

/// Up to `per_technique` ATT&CK procedure examples (`Catalog::procedures`) of each technique in
/// `texts` as queries
/// (id `attack:procedure/<index>`, actor `ATT&CK`, gold: the example's technique), in catalog
/// order; examples with an empty description are skipped.
pub fn procedure_queries(
    procedures: &[ProcedureExample],
    texts: &BTreeMap<TechniqueId, String>,
    per_technique: usize,
) -> Vec<RerankQuery> {
    let mut taken: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, p) in procedures.iter().enumerate() {
        if !texts.contains_key(&p.technique) || p.description.trim().is_empty() {
            continue;
        }
        let n = taken.entry(&p.technique).or_default();
        if *n < per_technique {
            *n += 1;
            out.push(RerankQuery {
                id: format!("attack:procedure/{i}"),
                actor: "ATT&CK".into(),
                query: p.description.clone(),
                gold: BTreeSet::from([p.technique.clone()]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{split_queries, EmulationStep};

    fn tid(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    #[test]
    fn pairs_one_gold_get_round_2_5_negatives_never_gold() {
        let gold: BTreeSet<_> = [tid("T1059.001")].into_iter().collect();
        let cands: Vec<_> = ["T1059.001", "T1059", "T1105", "T1027", "T1071"]
            .iter()
            .map(|s| tid(s))
            .collect();
        let pairs = build_pairs("q", &gold, &cands, 2.5, 7);
        // 1 gold; round(1 * 2.5) = 3 negatives (f64::round rounds half away from zero).
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs.iter().filter(|p| p.label == 1.0).count(), 1);
        assert!(pairs[1..].iter().all(|p| p.technique != tid("T1059.001")));
    }

    #[test]
    fn query_split_shares_no_query_text() {
        let steps: Vec<EmulationStep> = (0..60)
            .map(|i| EmulationStep {
                // Consecutive steps share a text but belong to different actors (i % 3), so the
                // split must group texts across actors.
                actor: format!("A{}", i % 3),
                step_id: i.to_string(),
                // Duplicate query texts (i / 2) must stay in one split.
                name: format!("step {}", i / 2),
                description: "d".into(),
                tactic: "execution".into(),
                technique: tid("T1059"),
                technique_name: "Command".into(),
                source_file: "f".into(),
            })
            .collect();
        let s = split_queries(&steps, (0.8, 0.1, 0.1), 42).unwrap();
        assert_eq!(s.train.len() + s.dev.len() + s.test.len(), 60);
        let set = |v: &[EmulationStep]| v.iter().map(|x| x.query()).collect::<BTreeSet<_>>();
        let (a, b, c) = (set(&s.train), set(&s.dev), set(&s.test));
        assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        assert!(!s.test.is_empty() && !s.dev.is_empty());
    }

    fn q(text: &str, gold: &[&str]) -> RerankQuery {
        RerankQuery {
            id: "A/1".into(),
            actor: "A".into(),
            query: text.into(),
            gold: gold.iter().map(|s| tid(s)).collect(),
        }
    }

    #[test]
    fn candidate_sets_hold_gold_once_and_k_members() {
        let pool: Vec<_> = (1000..1100).map(|i| tid(&format!("T{i}"))).collect();
        let bm25: Vec<_> = ["T1005", "T1001", "T1002", "T1003"]
            .iter()
            .map(|s| tid(s))
            .collect();
        let query = q("dump creds", &["T1001"]);
        let cfg = CandidateSetConfig {
            k: 20,
            negatives: NegativeSampling::Bm25,
            seed: 1,
        };
        let set = candidate_set(&query, &bm25, &pool, &cfg);
        assert_eq!(set.candidates.len(), 20);
        let unique: BTreeSet<_> = set.candidates.iter().collect();
        assert_eq!(unique.len(), 20);
        assert!(set.candidates.contains(&tid("T1001")));
        // BM25's non-gold hits come first among the negatives: all three are in.
        for t in ["T1005", "T1002", "T1003"] {
            assert!(set.candidates.contains(&tid(t)));
        }
        assert_eq!(set, candidate_set(&query, &bm25, &pool, &cfg));
        let random = CandidateSetConfig {
            negatives: NegativeSampling::Random,
            ..cfg
        };
        let r = candidate_set(&query, &bm25, &pool, &random);
        assert_eq!(r.candidates.len(), 20);
        assert!(r.candidates.contains(&tid("T1001")));
        // A pool smaller than k gives the whole pool.
        let small = candidate_set(&query, &[], &pool[..5], &cfg);
        assert_eq!(small.candidates.len(), 5);
    }

    #[test]
    fn queries_group_by_text_with_union_of_gold() {
        let step = |actor: &str, id: &str, name: &str, t: &str| EmulationStep {
            actor: actor.into(),
            step_id: id.into(),
            name: name.into(),
            description: "d".into(),
            tactic: "execution".into(),
            technique: tid(t),
            technique_name: String::new(),
            source_file: "f".into(),
        };
        let steps = vec![
            step("A", "1", "x", "T1059"),
            step("B", "2", "x", "T1105"),
            step("A", "3", "y", "T1027"),
        ];
        let qs = queries_from_steps(&steps);
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].id, "A/1");
        assert_eq!(qs[0].gold.len(), 2);
        assert_eq!(qs[1].query, "y. d");
    }

    #[test]
    fn procedure_queries_take_up_to_n_per_known_technique_in_order() {
        use crate::attack::EntityKind;
        let p = |t: &str, d: &str| ProcedureExample {
            technique: t.parse().unwrap(),
            source_id: "G0001".into(),
            source_name: "g".into(),
            source_kind: EntityKind::Group,
            description: d.into(),
        };
        let procs = vec![
            p("T1059", "a"),
            p("T1003", "b"),
            p("T1059", "  "),
            p("T1059", "c"),
            p("T1059", "d"),
            p("T9999", "unknown technique"),
        ];
        let texts: BTreeMap<TechniqueId, String> = [("T1059", "x"), ("T1003", "y")]
            .into_iter()
            .map(|(t, x)| (t.parse().unwrap(), x.to_string()))
            .collect();
        let q = procedure_queries(&procs, &texts, 2);
        let got: Vec<(&str, &str)> = q
            .iter()
            .map(|q| (q.id.as_str(), q.query.as_str()))
            .collect();
        // The blank description is skipped; T1059 stops at 2; T9999 has no candidate text.
        assert_eq!(
            got,
            vec![
                ("attack:procedure/0", "a"),
                ("attack:procedure/1", "b"),
                ("attack:procedure/3", "c")
            ]
        );
        assert!(q.iter().all(|q| q.actor == "ATT&CK" && q.gold.len() == 1));
        assert!(procedure_queries(&procs, &texts, 0).is_empty());
    }
}

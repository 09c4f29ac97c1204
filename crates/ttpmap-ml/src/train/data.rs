//! Training-data preparation: what the fit loops learn from, built from the ATT&CK catalog and
//! a dataset, with no tensors involved.
//!
//! - Classifier ([`classifier_data`]): the dataset's sentence-level validation split (seeded),
//!   the label set (every technique of the dataset, sorted), one label text per label
//!   ([`label_text`]) and the training sentences plus the optional augmentation: up to
//!   `augment_procedures` ATT&CK procedure examples per label (catalog order, document
//!   `attack:procedures`) and each label's description (document `attack:descriptions`).
//! - Reranker ([`reranker_data`]): the emulation queries' 80/10/10 split (by unique query
//!   text, stratified by actor, seeded), optional procedure-example queries, the published
//!   protocol's candidate sets (gold + BM25 or random negatives) and the candidate texts, as
//!   training groups (positives / negatives) and validation queries (candidates + relevance).
//!
//! Every function is deterministic in its inputs and seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ttpmap_core::attack::{Catalog, EntityKind, ProcedureExample, Technique};
use ttpmap_core::dataset::{self, Dataset, EmulationStep, LabeledDocument};
use ttpmap_core::rerank_data::{
    active_pool, candidate_sets, candidate_texts, procedure_queries, queries_from_steps,
    CandidateSet, CandidateSetConfig, CandidateTextConfig, SPLIT_FRACTIONS,
};
use ttpmap_core::retrieve::Bm25Index;
use ttpmap_core::software::whole_word_matches;
use ttpmap_core::TechniqueId;

use crate::train::classifier::{ClassifierTrainConfig, Example, TrainData};
use crate::train::reranker::{RerankerTrainData, TrainGroup, ValidationQuery};
use crate::Result;

/// `"T1059.001 PowerShell. <first sentence of the description>"`; the bare id when the
/// catalog does not know the technique.
pub fn label_text(technique: Option<&Technique>, id: &TechniqueId) -> String {
    match technique {
        Some(t) => {
            let first = t.description.split(". ").next().unwrap_or("").trim();
            format!("{id} {}. {first}", t.name)
        }
        None => id.to_string(),
    }
}

/// The sentences of `ds` as examples, in document order.
pub fn examples(ds: &Dataset) -> Vec<Example> {
    ds.sentences()
        .map(|s| Example::new(s.doc.clone(), s.text.clone(), s.labels.clone()))
        .collect()
}

/// Extra training sentences: up to `per_label` procedure examples of each label (in the
/// order of `procedures`), then each label's description where `description` gives one.
pub fn augmentation(
    labels: &[TechniqueId],
    procedures: &[ProcedureExample],
    per_label: usize,
    description: impl Fn(&TechniqueId) -> Option<String>,
) -> Vec<Example> {
    let labelset: BTreeSet<&TechniqueId> = labels.iter().collect();
    let mut out = Vec::new();
    let mut per: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
    for p in procedures
        .iter()
        .filter(|p| labelset.contains(&p.technique))
    {
        let n = per.entry(&p.technique).or_default();
        if *n < per_label {
            *n += 1;
            out.push(Example::new(
                "attack:procedures",
                p.description.clone(),
                vec![p.technique.clone()],
            ));
        }
    }
    for id in labels {
        if let Some(text) = description(id) {
            out.push(Example::new("attack:descriptions", text, vec![id.clone()]));
        }
    }
    out
}

/// The classifier's training data from `ds` (labels already remapped to `catalog`; see the
/// module docs).
pub fn classifier_data(
    catalog: &Catalog,
    ds: &Dataset,
    cfg: &ClassifierTrainConfig,
) -> Result<TrainData> {
    let (fit_ds, val_ds) = dataset::validation_split(ds, cfg.validation_fraction, cfg.split_seed)?;
    let labels: Vec<TechniqueId> = ds.technique_ids().into_iter().collect();
    let mut train = examples(&fit_ds);
    train.extend(augmentation(
        &labels,
        catalog.procedures(),
        cfg.augment_procedures,
        |id| {
            let t = catalog.technique(id).filter(|_| cfg.augment_descriptions)?;
            Some(t.description.clone())
        },
    ));
    Ok(TrainData {
        label_texts: labels
            .iter()
            .map(|l| label_text(catalog.technique(l), l))
            .collect(),
        labels,
        train,
        validation: examples(&val_ds),
    })
}

/// How the reranker's training data is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RerankerDataConfig {
    /// Seed of the 80/10/10 query split. Default 42.
    pub split_seed: u64,
    /// Candidate sets (default: 20 candidates, BM25 hard negatives, seed 42).
    pub candidates: CandidateSetConfig,
    /// How a candidate technique is rendered (default: name and first description sentence).
    pub candidate_text: CandidateTextConfig,
    /// Procedure examples per technique added as training queries. Default 0 (the recipe).
    pub augment_procedures: usize,
}

impl Default for RerankerDataConfig {
    fn default() -> Self {
        Self {
            split_seed: 42,
            candidates: CandidateSetConfig::default(),
            candidate_text: CandidateTextConfig::default(),
            augment_procedures: 0,
        }
    }
}

/// [`reranker_data`]'s result: the data and how it was made up.
#[derive(Debug, Clone)]
pub struct RerankerData {
    pub data: RerankerTrainData,
    /// Emulation queries among the training queries.
    pub train_emulation_queries: usize,
    /// Procedure-example queries among the training queries.
    pub procedure_queries: usize,
}

/// Training groups: per set, its gold candidates' texts as positives, the others' as
/// negatives (candidate order kept).
pub fn train_groups(
    sets: &[CandidateSet],
    texts: &BTreeMap<TechniqueId, String>,
) -> Vec<TrainGroup> {
    sets.iter()
        .map(|s| {
            let (pos, neg): (Vec<&TechniqueId>, Vec<&TechniqueId>) =
                s.candidates.iter().partition(|t| s.query.gold.contains(*t));
            TrainGroup {
                query: s.query.query.clone(),
                positives: pos.into_iter().map(|t| text_of(texts, t)).collect(),
                negatives: neg.into_iter().map(|t| text_of(texts, t)).collect(),
            }
        })
        .collect()
}

/// Validation queries: every candidate's text with whether it is gold.
pub fn validation_queries(
    sets: &[CandidateSet],
    texts: &BTreeMap<TechniqueId, String>,
) -> Vec<ValidationQuery> {
    sets.iter()
        .map(|s| ValidationQuery {
            query: s.query.query.clone(),
            candidates: s.candidates.iter().map(|t| text_of(texts, t)).collect(),
            relevant: s
                .candidates
                .iter()
                .map(|t| s.query.gold.contains(t))
                .collect(),
        })
        .collect()
}

fn text_of(texts: &BTreeMap<TechniqueId, String>, t: &TechniqueId) -> String {
    texts.get(t).cloned().unwrap_or_else(|| t.to_string())
}

/// The reranker's training data from the emulation `steps` (remapped to `catalog`), with BM25
/// over `index` ranking the hard negatives (see the module docs).
pub fn reranker_data(
    catalog: &Catalog,
    steps: &[EmulationStep],
    index: &Bm25Index,
    cfg: &RerankerDataConfig,
) -> Result<RerankerData> {
    let split = dataset::split_queries(steps, SPLIT_FRACTIONS, cfg.split_seed)?;
    let train_q = queries_from_steps(&split.train);
    let val_q = queries_from_steps(&split.dev);
    let pool = active_pool(catalog);
    let texts = candidate_texts(catalog, &cfg.candidate_text);
    let mut train_sets = candidate_sets(&train_q, index, &pool, &cfg.candidates);
    let procedures = procedure_queries(catalog.procedures(), &texts, cfg.augment_procedures);
    train_sets.extend(candidate_sets(&procedures, index, &pool, &cfg.candidates));
    let val_sets = candidate_sets(&val_q, index, &pool, &cfg.candidates);
    Ok(RerankerData {
        data: RerankerTrainData {
            train: train_groups(&train_sets, &texts),
            validation: validation_queries(&val_sets, &texts),
        },
        train_emulation_queries: train_q.len(),
        procedure_queries: procedures.len(),
    })
}

/// How the full-catalog model's training data is drawn ([`catalog_data`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogDataConfig {
    /// Share of each report dataset's training reports held out, as whole reports, for
    /// validation (threshold, calibration, model selection). Default 0.2.
    pub validation_fraction: f64,
    /// Seed of that report split. Default 42.
    pub split_seed: u64,
    /// ATT&CK procedure examples per technique (catalog order). Default 40.
    pub procedures_per_technique: usize,
    /// Each technique's description (first 3 sentences) as a training sentence. Default true.
    pub descriptions: bool,
    /// Add the training part of the emulation plans' 80/10/10 query split (the reranker's
    /// split; its validation and test parts are never read). Default true.
    pub emulation: bool,
    /// Seed of that query split: the reranker's, so its test split stays unseen. Default 42.
    pub emulation_split_seed: u64,
    /// Report datasets annotated for a fixed set of techniques (TRAM2: 50), not for all of
    /// ATT&CK: their validation reports are scored on the techniques that dataset labels
    /// anywhere in its training reports (a prediction outside them is neither right nor
    /// wrong). Default `["tram2"]`; empty: every report is scored on all of ATT&CK.
    pub fixed_label_space: Vec<String>,
    /// Also leave the techniques outside a fixed label space out of the training loss of that
    /// dataset's sentences (instead of making those sentences negatives for them). Default
    /// false: tried on 2026-12-02, it lowered validation per-document F1 (56.45 vs 58.85).
    pub fixed_label_space_loss: bool,
    /// Add AnnoCTR's `dev` split (16 reports of `raw/`, labelled by their mention links, in
    /// neither `train.json` nor `test.json`) to the validation reports: annotated over all of
    /// ATT&CK like the reports a user brings, so thresholds and calibration are chosen on more
    /// of the kind of data the model is for. Default true.
    pub annoctr_dev: bool,
    /// A sentence labelled with a parent technique and none of its sub-techniques is not a
    /// negative for those sub-techniques (they leave its loss): "T1059" says some interpreter
    /// was used, not that PowerShell was not. AnnoCTR's annotators link to parents almost
    /// only, so without this its PowerShell sentences (labelled T1059) teach T1059.001 "no".
    /// Default false.
    pub parent_labels_leave_subtechniques_unknown: bool,
    /// The sentences of a fixed-label-space dataset (TRAM2) are not negatives for the
    /// techniques outside its label space that belong to a family inside it (the parent and
    /// the sibling sub-techniques of one of its labels): TRAM2's annotators had T1059.003 but
    /// not T1059.001, so the 308 sentences of its training file that mention PowerShell teach
    /// T1059.001 "no". A family is where such a missing label is most confusable; leaving
    /// every outside label out (`fixed_label_space_loss`) removed too many true negatives.
    /// Default false.
    pub fixed_label_space_families_unknown: bool,
    /// Share (0 to 1) of the procedure examples whose group, software or campaign name is
    /// replaced by a generic subject ("APT29 has used PowerShell" -> "The threat actor has
    /// used PowerShell"; software: "The malware", ...), so that they read more like a report,
    /// which names its actor once and then says "the actor" or "they". Which examples and
    /// which subject depend only on the text (no seed). Default 0.
    pub procedure_generic_subjects: f64,
}

impl Default for CatalogDataConfig {
    fn default() -> Self {
        Self {
            validation_fraction: 0.2,
            split_seed: 42,
            procedures_per_technique: 40,
            descriptions: true,
            emulation: true,
            emulation_split_seed: 42,
            fixed_label_space: vec!["tram2".into()],
            fixed_label_space_loss: false,
            annoctr_dev: true,
            parent_labels_leave_subtechniques_unknown: false,
            fixed_label_space_families_unknown: false,
            procedure_generic_subjects: 0.0,
        }
    }
}

/// The labelled data [`catalog_data`] draws from, remapped to the catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogSources<'a> {
    /// Report datasets (TRAM2 train, AnnoCTR train): whole reports are split into fitting and
    /// validation; their unlabelled sentences are the "no technique" examples.
    pub reports: &'a [Dataset],
    /// Sentence datasets used for fitting only (e.g. exported analyst reviews).
    pub extra: &'a [Dataset],
    /// Report datasets used for validation only, whole (e.g. AnnoCTR's dev split).
    pub validation_only: &'a [Dataset],
    /// Emulation-plan steps (all of them; only the training part of the split is used).
    pub emulation: &'a [EmulationStep],
}

/// [`catalog_data`]'s result: the data and its make-up.
#[derive(Debug, Clone)]
pub struct CatalogData {
    pub data: TrainData,
    /// Training sentences per source (`tram2`, `annoctr`, `attack:procedures`, ...).
    pub train_sources: BTreeMap<String, usize>,
    /// Validation sentences per report dataset.
    pub validation_sources: BTreeMap<String, usize>,
    /// Training sentences with labels out of their loss ([`Example::unknown`]), and the
    /// (sentence, label) pairs left out.
    pub unknown: (usize, usize),
    /// Validation reports per report dataset.
    pub validation_reports: BTreeMap<String, usize>,
}

/// FNV-1a of `text`: a seed-free, platform-free choice per text.
fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `text` with every whole-word occurrence of `name` replaced by a generic subject for its
/// kind ("The threat actor", "The malware", ...; capitalised at the start of a sentence),
/// when the text's hash falls in the first `share` of the range and it names `name`; else
/// `None`. Subjects are singular, so "has used" stays grammatical.
fn generic_subject(text: &str, name: &str, kind: EntityKind, share: f64) -> Option<String> {
    const GROUP: [&str; 5] = ["threat actor", "adversary", "group", "attacker", "operator"];
    const SOFTWARE: [&str; 5] = ["malware", "backdoor", "implant", "payload", "tool"];
    const CAMPAIGN: [&str; 3] = ["campaign", "operation", "intrusion"];
    let h = text_hash(text);
    if name.trim().is_empty() || ((h >> 11) as f64 / (1u64 << 53) as f64) >= share {
        return None;
    }
    let pool: &[&str] = match kind {
        EntityKind::Group => &GROUP,
        EntityKind::Malware | EntityKind::Tool => &SOFTWARE,
        EntityKind::Campaign => &CAMPAIGN,
    };
    let subject = pool[(h % pool.len() as u64) as usize];
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for start in whole_word_matches(text, name) {
        out.push_str(&text[from..start]);
        let before = out.trim_end();
        let starts_sentence = before.is_empty() || before.ends_with(['.', '!', '?']);
        out.push_str(if starts_sentence { "The " } else { "the " });
        out.push_str(subject);
        from = start + name.len();
    }
    if from == 0 {
        return None;
    }
    out.push_str(&text[from..]);
    Some(out)
}

/// The first `n` sentences of `text` (split at ". ").
fn first_sentences(text: &str, n: usize) -> String {
    let mut out = String::new();
    for (i, part) in text.split(". ").take(n).enumerate() {
        if i > 0 {
            out.push_str(". ");
        }
        out.push_str(part.trim());
    }
    out
}

/// The full-catalog model's data: every active technique with at least one training example
/// is a label (sub-techniques and parents alike), the training sentences are the fitting
/// reports of `sources.reports` (labelled and unlabelled, document ids prefixed with the
/// dataset name), `sources.extra`, up to `procedures_per_technique` ATT&CK procedure examples
/// per technique, the techniques' descriptions and the emulation training queries; the
/// validation sentences are the held-out whole reports. Labels outside the active catalog are
/// dropped (the datasets are remapped before). Deterministic in its inputs.
pub fn catalog_data(
    catalog: &Catalog,
    sources: &CatalogSources,
    cfg: &CatalogDataConfig,
) -> Result<CatalogData> {
    if !(0.0..=1.0).contains(&cfg.procedure_generic_subjects) {
        return Err(crate::Error::InvalidArgument(format!(
            "procedure_generic_subjects is {}, not a share between 0 and 1",
            cfg.procedure_generic_subjects
        )));
    }
    let active: BTreeSet<TechniqueId> = active_pool(catalog).into_iter().collect();
    let keep = |labels: &[TechniqueId]| -> Vec<TechniqueId> {
        let mut v: Vec<TechniqueId> = labels
            .iter()
            .filter(|l| active.contains(*l))
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut train: Vec<Example> = Vec::new();
    let mut validation: Vec<Example> = Vec::new();
    let mut train_sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut validation_sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut validation_reports: BTreeMap<String, usize> = BTreeMap::new();
    // Fixed label spaces whose families leave the loss, by dataset name.
    let mut families_unknown: BTreeMap<String, Arc<BTreeSet<TechniqueId>>> = BTreeMap::new();
    let push = |to: &mut Vec<Example>, doc: String, text: &str, labels: &[TechniqueId]| {
        to.push(Example::new(doc, text, keep(labels)))
    };
    // Every sentence of `docs` (document ids prefixed with the dataset name), counted per
    // dataset in `counts`.
    let push_reports = |to: &mut Vec<Example>,
                        counts: &mut BTreeMap<String, usize>,
                        name: &str,
                        docs: &[LabeledDocument],
                        space: Option<&Arc<BTreeSet<TechniqueId>>>| {
        for d in docs {
            for s in &d.sentences {
                let mut e =
                    Example::new(format!("{name}:{}", d.id), s.text.as_str(), keep(&s.labels));
                e.label_space = space.cloned();
                to.push(e);
            }
            *counts.entry(name.to_string()).or_default() += d.sentences.len();
        }
    };
    for name in &cfg.fixed_label_space {
        if !sources.reports.iter().any(|ds| &ds.name == name) {
            return Err(crate::Error::InvalidArgument(format!(
                "fixed_label_space names {name:?}, which is not one of the report datasets ({})",
                sources
                    .reports
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    for ds in sources.reports {
        let split =
            dataset::split_by_report(&ds.documents, cfg.validation_fraction, cfg.split_seed)?;
        let space: Option<Arc<BTreeSet<TechniqueId>>> =
            cfg.fixed_label_space.contains(&ds.name).then(|| {
                Arc::new(
                    ds.documents
                        .iter()
                        .flat_map(|d| &d.sentences)
                        .flat_map(|s| keep(&s.labels))
                        .collect(),
                )
            });
        let train_space = space.as_ref().filter(|_| cfg.fixed_label_space_loss);
        if let Some(space) = &space {
            families_unknown.insert(ds.name.clone(), space.clone());
        }
        push_reports(
            &mut train,
            &mut train_sources,
            &ds.name,
            &split.train,
            train_space,
        );
        push_reports(
            &mut validation,
            &mut validation_sources,
            &ds.name,
            &split.test,
            space.as_ref(),
        );
        validation_reports.insert(ds.name.clone(), split.test.len());
    }
    for ds in sources.validation_only {
        push_reports(
            &mut validation,
            &mut validation_sources,
            &ds.name,
            &ds.documents,
            None,
        );
        *validation_reports.entry(ds.name.clone()).or_default() += ds.documents.len();
    }
    for ds in sources.extra {
        for s in ds.sentences() {
            push(
                &mut train,
                format!("{}:{}", ds.name, s.doc),
                &s.text,
                &s.labels,
            );
        }
        *train_sources.entry(ds.name.clone()).or_default() += ds.sentences().count();
    }
    if cfg.emulation && !sources.emulation.is_empty() {
        let split =
            dataset::split_queries(sources.emulation, SPLIT_FRACTIONS, cfg.emulation_split_seed)?;
        for s in &split.train {
            push(
                &mut train,
                format!("emulation:{}", s.actor),
                &s.query(),
                std::slice::from_ref(&s.technique),
            );
        }
        train_sources.insert("emulation".into(), split.train.len());
    }
    // Procedure examples: texts shared by several techniques carry all their labels.
    let mut per: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
    let mut procs: BTreeMap<&str, Vec<TechniqueId>> = BTreeMap::new();
    // The first example of each text (its source names the subject to replace).
    let mut proc_order: Vec<&ProcedureExample> = Vec::new();
    for p in catalog
        .procedures()
        .iter()
        .filter(|p| active.contains(&p.technique))
    {
        let n = per.entry(&p.technique).or_default();
        if *n >= cfg.procedures_per_technique || p.description.trim().is_empty() {
            continue;
        }
        *n += 1;
        let e = procs.entry(p.description.as_str()).or_default();
        if e.is_empty() {
            proc_order.push(p);
        }
        e.push(p.technique.clone());
    }
    for p in &proc_order {
        let text = p.description.as_str();
        let written = generic_subject(
            text,
            &p.source_name,
            p.source_kind,
            cfg.procedure_generic_subjects,
        );
        push(
            &mut train,
            "attack:procedures".into(),
            written.as_deref().unwrap_or(text),
            &procs[text],
        );
    }
    train_sources.insert("attack:procedures".into(), proc_order.len());
    let labels: Vec<TechniqueId> = train
        .iter()
        .flat_map(|e| e.labels.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if cfg.descriptions {
        let mut n = 0;
        for id in &labels {
            if let Some(t) = catalog.technique(id) {
                let text = first_sentences(&t.description, 3);
                if !text.is_empty() {
                    push(
                        &mut train,
                        "attack:descriptions".into(),
                        &text,
                        std::slice::from_ref(id),
                    );
                    n += 1;
                }
            }
        }
        train_sources.insert("attack:descriptions".into(), n);
    }
    if labels.is_empty() {
        return Err(crate::Error::InvalidArgument(
            "the training sources hold no active ATT&CK technique label".into(),
        ));
    }
    let unknown = mark_unknown(&mut train, &labels, &families_unknown, cfg);
    // Validation labels the model cannot output stay gold (they count as misses).
    Ok(CatalogData {
        data: TrainData {
            label_texts: labels
                .iter()
                .map(|l| label_text(catalog.technique(l), l))
                .collect(),
            labels,
            train,
            validation,
        },
        train_sources,
        validation_sources,
        unknown,
        validation_reports,
    })
}

/// Sets [`Example::unknown`] of the training sentences by the two rules of
/// [`CatalogDataConfig`] (`parent_labels_leave_subtechniques_unknown`,
/// `fixed_label_space_families_unknown`), over the model's `labels`. `families` maps a fixed-
/// label-space dataset's name (a sentence's document id is `<name>:<doc>`) to its label space.
/// Returns how many sentences have labels out of their loss, and how many such pairs.
fn mark_unknown(
    train: &mut [Example],
    labels: &[TechniqueId],
    families: &BTreeMap<String, Arc<BTreeSet<TechniqueId>>>,
    cfg: &CatalogDataConfig,
) -> (usize, usize) {
    // The model's labels by family (parent id).
    let mut family: BTreeMap<TechniqueId, BTreeSet<TechniqueId>> = BTreeMap::new();
    for l in labels {
        family.entry(l.parent()).or_default().insert(l.clone());
    }
    // Per dataset: the labels outside its space in a family of a label inside it.
    let outside: BTreeMap<&str, Arc<BTreeSet<TechniqueId>>> = families
        .iter()
        .filter(|_| cfg.fixed_label_space_families_unknown)
        .map(|(name, space)| {
            let set = space
                .iter()
                .flat_map(|l| family.get(&l.parent()).into_iter().flatten())
                .filter(|l| !space.contains(*l))
                .cloned()
                .collect();
            (name.as_str(), Arc::new(set))
        })
        .collect();
    let (mut sentences, mut pairs) = (0, 0);
    for e in train {
        let base = e
            .doc
            .split_once(':')
            .and_then(|(name, _)| outside.get(name))
            .filter(|s| !s.is_empty());
        let mut subs: BTreeSet<TechniqueId> = BTreeSet::new();
        if cfg.parent_labels_leave_subtechniques_unknown {
            for l in e.labels.iter().filter(|l| !l.is_subtechnique()) {
                let members = family.get(l).into_iter().flatten();
                let (sub, labelled): (Vec<&TechniqueId>, Vec<&TechniqueId>) = members
                    .filter(|m| m.is_subtechnique())
                    .partition(|m| !e.labels.contains(*m));
                if labelled.is_empty() {
                    subs.extend(sub.into_iter().cloned());
                }
            }
        }
        e.unknown = match (base, subs.is_empty()) {
            (None, true) => None,
            (Some(b), true) => Some(b.clone()),
            (b, false) => {
                subs.extend(b.into_iter().flat_map(|b| b.iter().cloned()));
                Some(Arc::new(subs))
            }
        };
        if let Some(u) = &e.unknown {
            sentences += 1;
            pairs += u.iter().filter(|l| !e.labels.contains(*l)).count();
        }
    }
    (sentences, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttpmap_core::dataset::{LabeledDocument, LabeledSentence};
    use ttpmap_core::rerank_data::RerankQuery;

    fn tid(s: &str) -> TechniqueId {
        s.parse().unwrap()
    }

    #[test]
    fn generic_subjects_replace_whole_names_and_follow_the_share() {
        let text = "APT5 has used the Task Manager. APT5 has also dumped hashes; APT55 and \
                    APT5's tools differ.";
        let out = generic_subject(text, "APT5", EntityKind::Group, 1.0).unwrap();
        // Whole words only (APT55 stays), capitalised at sentence starts, possessive kept.
        assert!(out.starts_with("The "), "{out}");
        assert!(out.contains("APT55"), "{out}");
        assert!(!out.replace("APT55", "").contains("APT5"), "{out}");
        let subject = out.split(" has used").next().unwrap().to_string();
        assert!(out.contains(&format!(". {subject} has also")), "{out}");
        assert!(
            out.contains(&format!("and {}'s tools", subject.to_lowercase())),
            "{out}"
        );
        // The choice depends on the text only, and share 0 rewrites nothing.
        assert_eq!(
            generic_subject(text, "APT5", EntityKind::Group, 1.0).unwrap(),
            out
        );
        assert_eq!(generic_subject(text, "APT5", EntityKind::Group, 0.0), None);
        // A text that does not name its source is left as it is.
        assert_eq!(
            generic_subject("Uses PowerShell.", "APT5", EntityKind::Group, 1.0),
            None
        );
        let sw = generic_subject(
            "SombRAT can SSL encrypt C2 traffic.",
            "SombRAT",
            EntityKind::Malware,
            1.0,
        )
        .unwrap();
        assert!(sw.ends_with(" can SSL encrypt C2 traffic."), "{sw}");
        assert!(
            [
                "The malware",
                "The backdoor",
                "The implant",
                "The payload",
                "The tool"
            ]
            .iter()
            .any(|s| sw.starts_with(s)),
            "{sw}"
        );
        // About `share` of many texts are rewritten.
        let n = (0..2000)
            .filter(|i| {
                generic_subject(&format!("X did thing {i}."), "X", EntityKind::Tool, 0.5).is_some()
            })
            .count();
        assert!((850..1150).contains(&n), "{n} of 2000 at share 0.5");
    }

    fn procedure(t: &str, d: &str) -> ProcedureExample {
        ProcedureExample {
            technique: tid(t),
            source_id: "G0001".into(),
            source_name: "g".into(),
            source_kind: EntityKind::Group,
            description: d.into(),
        }
    }

    #[test]
    fn augmentation_caps_procedures_per_label_and_adds_known_descriptions() {
        let labels = vec![tid("T1003"), tid("T1059")];
        let procs = vec![
            procedure("T1059", "a"),
            procedure("T1566", "not a label"),
            procedure("T1059", "b"),
            procedure("T1003", "c"),
            procedure("T1059", "d"),
        ];
        let describe = |id: &TechniqueId| (id == &tid("T1059")).then(|| "runs commands".into());
        let out = augmentation(&labels, &procs, 2, describe);
        let got: Vec<(&str, &str, String)> = out
            .iter()
            .map(|e| (e.doc.as_str(), e.text.as_str(), e.labels[0].to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("attack:procedures", "a", "T1059".to_string()),
                ("attack:procedures", "b", "T1059".to_string()),
                ("attack:procedures", "c", "T1003".to_string()),
                ("attack:descriptions", "runs commands", "T1059".to_string()),
            ]
        );
        assert!(augmentation(&labels, &procs, 0, |_| None).is_empty());
    }

    /// A bundle with four active techniques and one procedure example.
    fn tiny_catalog() -> Catalog {
        let technique = |id: &str, name: &str| {
            format!(
                r#"{{"type": "attack-pattern", "id": "attack-pattern--{id}", "name": "{name}",
                  "description": "{name} is used. More text.",
                  "kill_chain_phases": [{{"kill_chain_name": "mitre-attack", "phase_name": "execution"}}],
                  "external_references": [{{"source_name": "mitre-attack", "external_id": "{id}"}}]}}"#
            )
        };
        let objects = [
            technique("T1059", "Command and Scripting Interpreter"),
            technique("T1003", "OS Credential Dumping"),
            technique("T1021", "Remote Services"),
            technique("T1486", "Data Encrypted for Impact"),
            r#"{"type": "intrusion-set", "id": "intrusion-set--1", "name": "G",
               "external_references": [{"source_name": "mitre-attack", "external_id": "G0001"}]}"#
                .to_string(),
            r#"{"type": "relationship", "id": "relationship--1", "relationship_type": "uses",
               "source_ref": "intrusion-set--1", "target_ref": "attack-pattern--T1021",
               "description": "G moved with remote services."}"#
                .to_string(),
        ];
        let bundle = format!(
            r#"{{"type": "bundle", "id": "bundle--t", "objects": [{}]}}"#,
            objects.join(",")
        );
        Catalog::from_slice(bundle.as_bytes(), std::path::Path::new("tiny.json")).unwrap()
    }

    fn report_dataset(name: &str, labels: &[&str]) -> Dataset {
        let documents = (0..4)
            .map(|d| LabeledDocument {
                id: format!("r{d}"),
                sentences: vec![
                    LabeledSentence {
                        text: format!("{name} report {d} technique sentence"),
                        labels: vec![tid(labels[d % labels.len()])],
                        doc: format!("r{d}"),
                    },
                    LabeledSentence {
                        text: format!("{name} report {d} other sentence"),
                        labels: vec![],
                        doc: format!("r{d}"),
                    },
                ],
            })
            .collect();
        Dataset {
            name: name.into(),
            split: "train".into(),
            documents,
            other_labels: BTreeMap::new(),
        }
    }

    #[test]
    fn unknown_labels_follow_parents_and_the_families_of_a_fixed_label_space() {
        let labels: Vec<TechniqueId> = [
            "T1003",
            "T1003.001",
            "T1059",
            "T1059.001",
            "T1059.003",
            "T1105",
            "T1566.001",
            "T1566.002",
        ]
        .iter()
        .map(|s| tid(s))
        .collect();
        let ex = |doc: &str, l: &[&str]| Example::new(doc, "s", l.iter().map(|s| tid(s)).collect());
        let mut train = vec![
            ex("annoctr:a", &["T1059"]),
            ex("annoctr:a", &["T1059", "T1059.003"]),
            ex("annoctr:a", &["T1105"]),
            ex("tram2:b", &[]),
            ex("tram2:b", &["T1003"]),
            ex("attack:procedures", &["T1566.001"]),
        ];
        // TRAM2's space: T1059.003, T1105, T1566.001 and T1003 (a parent, subs outside).
        let space: BTreeSet<TechniqueId> = ["T1059.003", "T1105", "T1566.001", "T1003"]
            .iter()
            .map(|s| tid(s))
            .collect();
        let families = BTreeMap::from([("tram2".to_string(), Arc::new(space))]);
        let set = |v: &[&str]| Some(Arc::new(v.iter().map(|s| tid(s)).collect::<BTreeSet<_>>()));
        let unknown =
            |train: &[Example]| -> Vec<_> { train.iter().map(|e| e.unknown.clone()).collect() };

        let off = CatalogDataConfig::default();
        mark_unknown(&mut train, &labels, &families, &off);
        assert!(
            unknown(&train).iter().all(Option::is_none),
            "both rules off by default"
        );

        let parents = CatalogDataConfig {
            parent_labels_leave_subtechniques_unknown: true,
            ..CatalogDataConfig::default()
        };
        mark_unknown(&mut train, &labels, &BTreeMap::new(), &parents);
        assert_eq!(
            unknown(&train),
            vec![
                set(&["T1059.001", "T1059.003"]),
                None, // a sub-technique of T1059 is labelled: the others are negatives
                None,
                None,
                set(&["T1003.001"]),
                None,
            ]
        );

        let both = CatalogDataConfig {
            parent_labels_leave_subtechniques_unknown: true,
            fixed_label_space_families_unknown: true,
            ..CatalogDataConfig::default()
        };
        assert_eq!(mark_unknown(&mut train, &labels, &families, &both), (3, 10));
        let tram2_family = ["T1003.001", "T1059", "T1059.001", "T1566.002"];
        assert_eq!(
            unknown(&train),
            vec![
                set(&["T1059.001", "T1059.003"]),
                None,
                None,
                set(&tram2_family),
                set(&tram2_family),
                None,
            ]
        );
    }

    #[test]
    fn a_fixed_label_space_dataset_carries_its_labels_and_others_do_not() {
        let catalog = tiny_catalog();
        let reports = [
            report_dataset("tram2", &["T1059", "T1003"]),
            report_dataset("annoctr", &["T1486"]),
        ];
        let sources = CatalogSources {
            reports: &reports,
            ..CatalogSources::default()
        };
        let cfg = CatalogDataConfig {
            validation_fraction: 0.25,
            emulation: false,
            fixed_label_space: vec!["tram2".into()],
            fixed_label_space_loss: true,
            ..CatalogDataConfig::default()
        };
        let data = catalog_data(&catalog, &sources, &cfg).unwrap().data;
        let want: BTreeSet<TechniqueId> = [tid("T1003"), tid("T1059")].into();
        let (mut tram2, mut others) = (0, 0);
        for e in data.train.iter().chain(&data.validation) {
            if e.doc.starts_with("tram2:") {
                // Validation reports too: they are scored on the dataset's labels only.
                assert_eq!(e.label_space.as_deref(), Some(&want), "{e:?}");
                assert!(e.annotates(&tid("T1059")) && !e.annotates(&tid("T1021")));
                tram2 += 1;
            } else {
                assert_eq!(e.label_space, None, "{e:?}");
                assert!(e.annotates(&tid("T1021")));
                others += 1;
            }
        }
        assert_eq!(tram2, 8);
        // 8 AnnoCTR sentences, 1 procedure example, 4 descriptions (labels T1003, T1021,
        // T1059, T1486).
        assert_eq!(others, 8 + 1 + 4);
        assert!(data.validation.iter().any(|e| e.doc.starts_with("tram2:")));

        // Without the loss option only validation is restricted; without either, nothing; a
        // name that is not a dataset is refused.
        let scoring_only = CatalogDataConfig {
            fixed_label_space_loss: false,
            ..cfg.clone()
        };
        let data = catalog_data(&catalog, &sources, &scoring_only)
            .unwrap()
            .data;
        assert!(data.train.iter().all(|e| e.label_space.is_none()));
        assert!(data
            .validation
            .iter()
            .all(|e| e.doc.starts_with("tram2:") == e.label_space.is_some()));
        let plain = CatalogDataConfig {
            fixed_label_space: vec![],
            ..cfg.clone()
        };
        let data = catalog_data(&catalog, &sources, &plain).unwrap().data;
        assert!(data
            .train
            .iter()
            .chain(&data.validation)
            .all(|e| e.label_space.is_none()));
        let typo = CatalogDataConfig {
            fixed_label_space: vec!["tram".into()],
            ..cfg
        };
        let err = catalog_data(&catalog, &sources, &typo)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"tram\"") && err.contains("tram2, annoctr"),
            "{err}"
        );
    }

    #[test]
    fn validation_only_reports_go_whole_into_validation_and_are_counted() {
        let catalog = tiny_catalog();
        let reports = [report_dataset("tram2", &["T1059"])];
        let dev = [report_dataset("annoctr-dev", &["T1486", "T1003"])];
        let sources = CatalogSources {
            reports: &reports,
            validation_only: &dev,
            ..CatalogSources::default()
        };
        let cfg = CatalogDataConfig {
            validation_fraction: 0.25,
            emulation: false,
            ..CatalogDataConfig::default()
        };
        let out = catalog_data(&catalog, &sources, &cfg).unwrap();
        let dev_val: Vec<&Example> = out
            .data
            .validation
            .iter()
            .filter(|e| e.doc.starts_with("annoctr-dev:"))
            .collect();
        assert_eq!(dev_val.len(), 8, "all 4 reports, 2 sentences each");
        assert!(dev_val.iter().all(|e| e.label_space.is_none()));
        assert!(!out
            .data
            .train
            .iter()
            .any(|e| e.doc.starts_with("annoctr-dev:")));
        assert_eq!(out.validation_reports["annoctr-dev"], 4);
        assert_eq!(out.validation_sources["annoctr-dev"], 8);
        // A label only validation reports carry does not become a model label.
        assert!(!out.data.labels.contains(&tid("T1486")));
    }

    #[test]
    fn label_text_is_id_name_and_first_sentence() {
        assert_eq!(label_text(None, &tid("T1003")), "T1003");
    }

    #[test]
    fn examples_keep_document_order_and_labels() {
        let ds = Dataset {
            name: "t".into(),
            split: "train".into(),
            documents: vec![LabeledDocument {
                id: "d1".into(),
                sentences: vec![
                    LabeledSentence {
                        text: "x".into(),
                        labels: vec![tid("T1003")],
                        doc: "d1".into(),
                    },
                    LabeledSentence {
                        text: "y".into(),
                        labels: vec![],
                        doc: "d1".into(),
                    },
                ],
            }],
            other_labels: BTreeMap::new(),
        };
        let e = examples(&ds);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].text.as_str(), e[0].labels.len()), ("x", 1));
        assert_eq!((e[1].doc.as_str(), e[1].labels.len()), ("d1", 0));
    }

    #[test]
    fn candidate_sets_become_groups_and_validation_queries() {
        let set = CandidateSet {
            query: RerankQuery {
                id: "a/1".into(),
                actor: "a".into(),
                query: "dump credentials".into(),
                gold: BTreeSet::from([tid("T1003")]),
            },
            candidates: vec![tid("T1059"), tid("T1003"), tid("T1566")],
        };
        let texts: BTreeMap<TechniqueId, String> = [("T1059", "shell"), ("T1003", "dump")]
            .into_iter()
            .map(|(t, x)| (tid(t), x.to_string()))
            .collect();
        let g = train_groups(std::slice::from_ref(&set), &texts);
        assert_eq!(g[0].query, "dump credentials");
        assert_eq!(g[0].positives, vec!["dump"]);
        // A technique without a candidate text is rendered as its id.
        assert_eq!(g[0].negatives, vec!["shell", "T1566"]);
        let v = validation_queries(&[set], &texts);
        assert_eq!(v[0].candidates, vec!["shell", "dump", "T1566"]);
        assert_eq!(v[0].relevant, vec![false, true, false]);
    }
}

//! Building the scoring method a command asked for (`--method`), with its cached indexes.

use std::path::PathBuf;

use anyhow::Context;
use ttpmap_core::attack::Catalog;
use ttpmap_core::pipeline::{Bm25Scorer, HybridScorer, SentenceScorer};
use ttpmap_core::retrieve::{technique_documents, Analyzer, Bm25Index, Bm25Params, DocOptions};
use ttpmap_ml::dense::{
    index_entries, model_fingerprint, DenseIndex, DenseScorer, IndexKey, VoteRule,
};
use ttpmap_ml::rerank::RerankScorer;
use ttpmap_ml::{artifact, Artifact, ClassifierScorer, Device, Embedder, EmbedderConfig, ModelDir};

use crate::assets::Assets;

/// Extraction and ranking methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// BM25 over ATT&CK technique descriptions and procedure examples (lexical baseline).
    Bm25,
    /// Nearest neighbours among embedded procedure examples and technique descriptions
    /// (needs a sentence-transformers model folder, `--model`).
    Dense,
    /// BM25 and dense fused with reciprocal rank fusion; with a classifier artifact as
    /// `--model`, the classifier and BM25 fused (BM25 finds techniques outside its labels).
    Hybrid,
    /// A trained label-attention classifier (`--model DIR`, an artifact written by
    /// `ttpmap train classifier`; chosen automatically when `--model` is one).
    Classifier,
    /// BM25 candidates reranked by a cross-encoder (`--reranker DIR`, written by
    /// `ttpmap train reranker`); `--reranker` with bm25 or hybrid reranks that method's
    /// candidates.
    Rerank,
}

/// `--method` and its settings, shared by extract, rank and eval.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodArgs {
    /// Scoring method.
    #[arg(long, value_enum, default_value_t = Method::Bm25)]
    pub method: Method,
    /// BM25: leave ATT&CK procedure examples out of the technique documents.
    #[arg(long)]
    pub no_procedures: bool,
    /// Dense/hybrid: sentence-transformers model folder or Hugging Face repo id (default:
    /// `<cache>/models/all-MiniLM-L6-v2`, downloaded from sentence-transformers/all-MiniLM-L6-v2
    /// when missing).
    #[arg(long, env = "TTPMAP_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Dense/hybrid: index at most this many ATT&CK procedure examples per technique (plus one
    /// description per technique). 20 keeps a cold index build to a few minutes on a CPU;
    /// the index is cached per model and ATT&CK version.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub dense_max_examples: usize,
    /// Dense/hybrid: how the nearest neighbours vote (max cosine, or similarity-weighted
    /// share of the neighbourhood).
    #[arg(long, value_enum, default_value_t = DenseVote::Max)]
    pub dense_vote: DenseVote,
    /// Cross-encoder reranker folder (Hugging Face BertForSequenceClassification layout):
    /// reranks the first stage's top `--rerank-candidates` techniques.
    #[arg(long, value_name = "DIR")]
    pub reranker: Option<PathBuf>,
    /// First-stage candidates the reranker scores per sentence.
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub rerank_candidates: usize,
}

/// `--dense-vote` values (see `ttpmap_ml::dense::VoteRule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DenseVote {
    /// A technique scores its nearest example's cosine.
    Max,
    /// A technique scores its similarity-weighted share of the k nearest rows.
    Weighted,
}

impl From<DenseVote> for VoteRule {
    fn from(v: DenseVote) -> Self {
        match v {
            DenseVote::Max => VoteRule::Max,
            DenseVote::Weighted => VoteRule::Weighted,
        }
    }
}

impl Default for MethodArgs {
    fn default() -> Self {
        MethodArgs {
            method: Method::Bm25,
            no_procedures: false,
            model: None,
            dense_max_examples: 20,
            dense_vote: DenseVote::Max,
            reranker: None,
            rerank_candidates: 20,
        }
    }
}

/// A ready scorer with its default threshold.
pub enum Scorer {
    Bm25(Bm25Scorer),
    Dense(Box<DenseScorer>),
    Hybrid(Box<HybridScorer<Bm25Scorer, DenseScorer>>),
    Classifier(Box<ClassifierScorer>),
    ClassifierHybrid(Box<HybridScorer<ClassifierScorer, Bm25Scorer>>),
    Rerank(Box<RerankScorer>),
}

impl Scorer {
    pub fn build(assets: &Assets, catalog: &Catalog, args: &MethodArgs) -> anyhow::Result<Scorer> {
        if args.method == Method::Rerank || args.reranker.is_some() {
            return rerank_scorer(assets, catalog, args);
        }
        if let Some(s) = classifier_scorer(catalog, args)? {
            return Ok(s);
        }
        match args.method {
            Method::Bm25 => Ok(Scorer::Bm25(Bm25Scorer::new(bm25_index(catalog, args)?))),
            Method::Dense => Ok(Scorer::Dense(Box::new(dense_scorer(
                assets, catalog, args,
            )?))),
            Method::Hybrid => Ok(Scorer::Hybrid(Box::new(HybridScorer::new(
                Bm25Scorer::new(bm25_index(catalog, args)?),
                dense_scorer(assets, catalog, args)?,
            )))),
            Method::Classifier => anyhow::bail!("--method classifier needs --model DIR"),
            Method::Rerank => unreachable!("handled above"),
        }
    }

    pub fn as_scorer(&self) -> &dyn SentenceScorer {
        match self {
            Scorer::Bm25(s) => s,
            Scorer::Dense(s) => s.as_ref(),
            Scorer::Hybrid(s) => s.as_ref(),
            Scorer::Classifier(s) => s.as_ref(),
            Scorer::ClassifierHybrid(s) => s.as_ref(),
            Scorer::Rerank(s) => s.as_ref(),
        }
    }

    /// Evaluation settings: candidates per sentence, evidence on/off, and an optional label
    /// space (applied to every underlying scorer).
    pub fn configure(
        &mut self,
        top_k: usize,
        with_evidence: bool,
        label_space: Option<&std::collections::BTreeSet<ttpmap_core::TechniqueId>>,
    ) {
        let bm25 = |s: &mut Bm25Scorer| {
            s.top_k = top_k;
            s.with_evidence = with_evidence;
            s.label_space = label_space.cloned();
        };
        let dense = |s: &mut DenseScorer| {
            // Max-cosine voting: more neighbours only add lower-ranked candidates, so enough
            // neighbours to fill `top_k` techniques leaves the ranking unchanged. A weighted
            // vote keeps its neighbourhood size (it is the vote's denominator).
            if s.vote == VoteRule::Max {
                s.k = s.k.max(3 * top_k);
            }
            s.top_k = top_k;
            s.with_evidence = with_evidence;
            s.label_space = label_space.cloned();
        };
        match self {
            Scorer::Bm25(s) => bm25(s),
            Scorer::Dense(s) => dense(s),
            Scorer::Hybrid(h) => {
                h.top_k = top_k;
                bm25(&mut h.first);
                dense(&mut h.second);
            }
            Scorer::Classifier(s) => configure_classifier(s, top_k, with_evidence, label_space),
            Scorer::ClassifierHybrid(h) => {
                h.top_k = top_k;
                configure_classifier(&mut h.first, top_k, with_evidence, label_space);
                bm25(&mut h.second);
            }
            Scorer::Rerank(s) => s.candidates = s.candidates.max(top_k),
        }
    }

    /// The dense scorer inside (dense and hybrid methods).
    pub fn dense_mut(&mut self) -> Option<&mut DenseScorer> {
        match self {
            Scorer::Bm25(_)
            | Scorer::Classifier(_)
            | Scorer::ClassifierHybrid(_)
            | Scorer::Rerank(_) => None,
            Scorer::Dense(s) => Some(s.as_mut()),
            Scorer::Hybrid(h) => Some(&mut h.second),
        }
    }

    /// The threshold used when the user gives none (tuned on training data: see README).
    pub fn default_threshold(&self) -> f32 {
        match self {
            Scorer::Bm25(_) => Bm25Scorer::DEFAULT_THRESHOLD,
            Scorer::Dense(_) => DenseScorer::DEFAULT_THRESHOLD,
            Scorer::Hybrid(_) => HybridScorer::<Bm25Scorer, DenseScorer>::DEFAULT_THRESHOLD,
            Scorer::Classifier(s) => s.tuned_threshold(),
            Scorer::ClassifierHybrid(_) => {
                HybridScorer::<ClassifierScorer, Bm25Scorer>::DEFAULT_THRESHOLD
            }
            Scorer::Rerank(_) => RERANK_DEFAULT_THRESHOLD,
        }
    }

    /// The classifier method's scorer (not a hybrid's), for per-seed evaluation.
    pub fn classifier(&self) -> Option<&ClassifierScorer> {
        match self {
            Scorer::Classifier(s) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// The thresholds stored in a classifier artifact (the classifier method alone: a fused
    /// hybrid score is not a probability).
    pub fn classifier_thresholds(&self) -> Option<artifact::Thresholds> {
        match self {
            Scorer::Classifier(s) => Some(s.artifact().manifest().thresholds),
            _ => None,
        }
    }
}

/// Default threshold on the reranker's probability.
pub const RERANK_DEFAULT_THRESHOLD: f32 = 0.5;

/// Opens `--reranker DIR` (error when missing), warning when its classifier head is untrained.
pub fn open_reranker(args: &MethodArgs) -> anyhow::Result<ttpmap_ml::CrossEncoder> {
    let Some(dir) = args.reranker.as_ref() else {
        anyhow::bail!("--method rerank needs --reranker DIR (a folder written by `ttpmap train reranker`, or a Hugging Face cross-encoder)");
    };
    let ce = ttpmap_ml::CrossEncoder::open(
        dir,
        &ttpmap_ml::CrossEncoderOptions::default(),
        &compute_device(),
    )
    .with_context(|| format!("loading the reranker in {}", dir.display()))?;
    if !ce.head_trained() {
        tracing::warn!(
            "{} has no classifier head: it is a seeded random head, so the reranker's scores are meaningless until it is fine-tuned (`ttpmap train reranker`)",
            dir.display()
        );
    }
    Ok(ce)
}

/// The reranking scorer: the first stage is `--method` (BM25 for `rerank`; bm25 or hybrid),
/// flagged sentences (first-stage confidence at least its default threshold) are reranked.
fn rerank_scorer(assets: &Assets, catalog: &Catalog, args: &MethodArgs) -> anyhow::Result<Scorer> {
    let ce = open_reranker(args)?;
    let first_args = MethodArgs {
        method: match args.method {
            Method::Rerank => Method::Bm25,
            m => m,
        },
        reranker: None,
        ..args.clone()
    };
    if !matches!(first_args.method, Method::Bm25 | Method::Hybrid) {
        anyhow::bail!(
            "--reranker reranks bm25 or hybrid candidates, not {:?}",
            first_args.method
        );
    }
    let mut first = Scorer::build(assets, catalog, &first_args)?;
    let flag = first.default_threshold();
    first.configure(args.rerank_candidates, false, None);
    let first: Box<dyn SentenceScorer> = match first {
        Scorer::Bm25(s) => Box::new(s),
        Scorer::Hybrid(s) => s,
        _ => anyhow::bail!("--reranker reranks bm25 or hybrid candidates"),
    };
    let texts = crate::rerank::candidate_texts(catalog, &ce.candidate_text_config());
    let mut s = RerankScorer::new(first, ce, texts);
    s.candidates = args.rerank_candidates;
    s.flag_threshold = flag;
    Ok(Scorer::Rerank(Box::new(s)))
}

fn configure_classifier(
    s: &mut ClassifierScorer,
    top_k: usize,
    with_evidence: bool,
    label_space: Option<&std::collections::BTreeSet<ttpmap_core::TechniqueId>>,
) {
    s.top_k = top_k;
    s.with_evidence = with_evidence;
    s.label_space = label_space.cloned();
}

/// The classifier scorer when `--model` is a classifier artifact (manifest.json) and the method
/// is bm25 (the default), classifier or hybrid; `None` otherwise. `--method classifier`
/// without an artifact and `--method dense` with one are errors.
pub fn classifier_scorer(catalog: &Catalog, args: &MethodArgs) -> anyhow::Result<Option<Scorer>> {
    let is_artifact = args.model.as_deref().is_some_and(artifact::is_artifact);
    match (args.method, is_artifact) {
        (Method::Classifier, false) => anyhow::bail!(
            "--method classifier needs --model DIR, a model folder written by `ttpmap train classifier` (with manifest.json){}",
            args.model
                .as_ref()
                .map(|p| format!("; {} is not one", p.display()))
                .unwrap_or_default()
        ),
        (Method::Dense, true) => anyhow::bail!(
            "{} is a classifier artifact, not a sentence-transformers model: use              --method classifier or --method hybrid",
            args.model.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        ),
        (_, false) => return Ok(None),
        _ => {}
    }
    let dir = args.model.clone().unwrap_or_default();
    let art = Artifact::open(&dir, &compute_device())
        .with_context(|| format!("loading the classifier in {}", dir.display()))?;
    let version = catalog.version();
    match &art.manifest().attack_version {
        Some(v) if v != version => tracing::warn!(
            "classifier {} was trained on ATT&CK {v}; the catalog is {version}",
            dir.display()
        ),
        _ => {}
    }
    let clf = ClassifierScorer::new(art);
    Ok(Some(match args.method {
        Method::Hybrid => Scorer::ClassifierHybrid(Box::new(HybridScorer::new(
            clf,
            Bm25Scorer::new(bm25_index(catalog, args)?),
        ))),
        _ => Scorer::Classifier(Box::new(clf)),
    }))
}

/// Where models run: the first CUDA GPU when built with the `cuda` feature and one is present,
/// else the CPU.
pub fn compute_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        match Device::cuda_if_available(0) {
            Ok(d) => return d,
            Err(e) => tracing::warn!("no usable CUDA device, running on the CPU: {e}"),
        }
    }
    Device::Cpu
}

/// The BM25 index over the catalog's active techniques. A sub-technique's name is indexed with
/// its parent's ("Command and Scripting Interpreter: PowerShell"), as ATT&CK displays it.
pub fn bm25_index(catalog: &Catalog, args: &MethodArgs) -> anyhow::Result<Bm25Index> {
    let opts = DocOptions {
        include_procedures: !args.no_procedures,
        ..DocOptions::default()
    };
    let techniques: Vec<_> = catalog
        .active_techniques()
        .map(|t| {
            let mut t = t.clone();
            if let Some(parent) = t.parent.as_ref().and_then(|p| catalog.technique(p)) {
                t.name = format!("{}: {}", parent.name, t.name);
            }
            t
        })
        .collect();
    let procedures: Vec<_> = catalog
        .procedures()
        .iter()
        .map(|p| (p.technique.clone(), p.description.clone()))
        .collect();
    let docs = technique_documents(&techniques, &procedures, &opts);
    Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new())
        .context("building the BM25 index")
}

/// The model folder for dense methods: `--model` / `TTPMAP_MODEL` (a folder or a Hugging Face
/// repo id), else `<cache>/models/all-MiniLM-L6-v2`, downloaded when missing (see `hub`).
pub fn model_path(assets: &Assets, args: &MethodArgs) -> anyhow::Result<PathBuf> {
    crate::hub::resolve_model(assets, args.model.as_deref())
}

/// The dense scorer: opens the model on the CPU and loads its index from the cache, building
/// it (with a progress bar) when the model, ATT&CK bundle or example cap changed.
pub fn dense_scorer(
    assets: &Assets,
    catalog: &Catalog,
    args: &MethodArgs,
) -> anyhow::Result<DenseScorer> {
    let path = model_path(assets, args)?;
    let md = ModelDir::open(&path)
        .with_context(|| format!("opening the model folder {}", path.display()))?;
    let embedder = Embedder::from_model_dir(&md, EmbedderConfig::default(), &compute_device())
        .with_context(|| format!("loading the model in {}", path.display()))?;
    let key = IndexKey {
        model: model_fingerprint(&md)?,
        catalog: catalog.fingerprint().to_string(),
        max_examples: args.dense_max_examples,
    };
    let entries = index_entries(catalog, args.dense_max_examples);
    let pb = crate::progress::bar(
        entries.len() as u64,
        "embedding ATT&CK examples (once per model and ATT&CK version)",
        assets.quiet(),
    );
    let (index, built) = DenseIndex::load_or_build(
        &assets.cache_dir(),
        &key,
        &embedder,
        &entries,
        &mut |done, _| pb.set_position(done as u64),
    )
    .context("building the dense index")?;
    pb.finish_and_clear();
    if built {
        tracing::info!(
            "dense index: {} rows cached at {}",
            index.len(),
            key.cache_path(&assets.cache_dir()).display()
        );
    }
    let mut scorer = DenseScorer::new(embedder, index, path);
    scorer.vote = args.dense_vote.into();
    Ok(scorer)
}

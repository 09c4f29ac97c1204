//! `--method dense`: nearest neighbours among embedded ATT&CK procedure examples and technique
//! descriptions (`ttpmap_ml::dense`), with the index cached per model and ATT&CK version.

use anyhow::Context;
use ttpmap_ml::dense::{index_entries, model_fingerprint, DenseIndex, DenseScorer, IndexKey, VoteRule};
use ttpmap_ml::{Embedder, EmbedderConfig, ModelDir};

use super::{compute_device, model_path, BuildContext, MethodSpec};

pub const SPEC: MethodSpec = MethodSpec {
    name: "dense",
    help: "Nearest neighbours among embedded procedure examples and technique descriptions \
           (needs a sentence-transformers model folder, --model)",
    build: |ctx| {
        if super::classifier::model_is_artifact(ctx.args) {
            anyhow::bail!(
                "{} is a classifier artifact, not a sentence-transformers model: use --method \
                 classifier or --method hybrid",
                ctx.args
                    .model
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        Ok(Box::new(dense_scorer(ctx)?))
    },
};

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

/// The dense scorer: opens the model on the CPU and loads its index from the cache, building
/// it (with a progress bar) when the model, ATT&CK bundle or example cap changed.
pub fn dense_scorer(ctx: &BuildContext<'_>) -> anyhow::Result<DenseScorer> {
    let (assets, catalog, args) = (ctx.assets, ctx.catalog, ctx.args);
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

/// `eval --neighbours train`: splits `train` 80:20 (seeded), adds the 80% as labelled
/// neighbours to the dense scorer inside `scorer` (dense or hybrid) and returns the 20% the
/// threshold is tuned on (a sentence must not find itself).
pub fn add_training_neighbours(
    scorer: &mut dyn ttpmap_core::pipeline::SentenceScorer,
    train: &ttpmap_core::dataset::Dataset,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<ttpmap_core::dataset::Dataset> {
    let Some(dense) = ttpmap_core::pipeline::find_scorer_mut::<DenseScorer>(scorer) else {
        anyhow::bail!("--neighbours train needs --method dense or hybrid");
    };
    let (fit, validation) = ttpmap_core::dataset::validation_split(train, 0.2, seed)?;
    let n = fit.sentences().map(|s| s.labels.len()).sum::<usize>();
    let pb = crate::progress::bar(n as u64, "embedding labelled training sentences", quiet);
    dense.add_labelled_sentences(
        fit.sentences()
            .map(|s| (s.text.as_str(), s.labels.as_slice())),
        &mut |d, _| pb.set_position(d as u64),
    )?;
    pb.finish_and_clear();
    Ok(validation)
}

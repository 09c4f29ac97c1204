//! `--method dense`: nearest neighbours among embedded ATT&CK procedure examples and technique
//! descriptions (`ttpmap_ml::dense`), with the index cached per model and ATT&CK version and
//! built from the shipped text embeddings where they apply (`ttpmap_ml::dense_store`).

use anyhow::Context;
use ttpmap_ml::dense::{index_entries, model_fingerprint, DenseIndex, DenseScorer, IndexKey, VoteRule};
use ttpmap_ml::dense_store::{embedded_source, EmbeddingStore};
use ttpmap_ml::{Embedder, EmbedderConfig, ModelDir};

use super::{compute_device, model_path, BuildContext, MethodSpec};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedding_stores.rs"));
}

/// The shipped embeddings of ATT&CK's texts (`models/embeddings/`, compiled into the binary)
/// made by the model with fingerprint `model`, if any. A store that does not parse is an error
/// naming it (the build embedded a broken file).
pub fn shipped_store(model: &str) -> anyhow::Result<Option<EmbeddingStore>> {
    for (name, bytes) in embedded::FILES {
        let source = embedded_source(&format!("models/embeddings/{name}"));
        let store = EmbeddingStore::from_bytes(bytes, &source)?;
        if store.header().model == model {
            return Ok(Some(store));
        }
    }
    Ok(None)
}

/// Names of the shipped embedding stores.
pub fn shipped_store_names() -> Vec<&'static str> {
    embedded::FILES.iter().map(|(n, _)| *n).collect()
}

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
/// it (with a progress bar) when the model, ATT&CK bundle or example cap changed. The build
/// takes the shipped embeddings of the texts they hold (same model only) and encodes the rest.
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
    let store = shipped_store(&key.model)?;
    let (index, built) = DenseIndex::load_or_build(
        &assets.cache_dir(),
        &key,
        &embedder,
        &entries,
        store.as_ref(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::shared_dir;

    /// The shipped store was made by the shared all-MiniLM-L6-v2 from ATT&CK 18.1: it holds
    /// every text of the full dense index, and its vectors point where a fresh encoding does.
    #[test]
    fn shipped_embeddings_cover_attack_and_match_a_fresh_encoding() {
        let shared = shared_dir();
        let md = ModelDir::open(shared.join("models/all-MiniLM-L6-v2")).expect("shared model");
        let fingerprint = model_fingerprint(&md).unwrap();
        assert_eq!(shipped_store_names(), ["all-MiniLM-L6-v2.ttpemb"]);
        let store = shipped_store(&fingerprint)
            .unwrap()
            .expect("a shipped store for the shared all-MiniLM-L6-v2");
        assert!(shipped_store("another model").unwrap().is_none());
        let catalog = ttpmap_core::attack::Catalog::from_path(
            &shared.join("data/attack/enterprise-attack-18.1.json"),
        )
        .unwrap();
        let entries = index_entries(&catalog, usize::MAX);
        assert_eq!(entries.len(), 16_708);
        let missing: Vec<&str> = entries
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| store.get(t).is_none())
            .collect();
        assert!(missing.is_empty(), "{} texts missing, e.g. {:?}", missing.len(), &missing[..1]);
        let embedder =
            Embedder::from_model_dir(&md, EmbedderConfig::default(), &ttpmap_ml::Device::Cpu)
                .unwrap();
        // Every 557th text: descriptions and procedure examples of all lengths.
        let sample: Vec<&str> = entries.iter().step_by(557).map(|(_, t)| t.as_str()).collect();
        // The store holds f32 encodings (as int8 rows); int8 linear layers (the default on
        // AVX512_VNNI without AMX) encode within cosine 0.9969 of them on this sample.
        let min = match ttpmap_ml::encoder::Precision::detect() {
            ttpmap_ml::encoder::Precision::Int8 => 0.99,
            _ => 0.9995,
        };
        for (text, fresh) in sample.iter().zip(embedder.encode(&sample).unwrap()) {
            let stored = store.get(text).unwrap();
            let cos: f32 = stored.iter().zip(&fresh).map(|(a, b)| a * b).sum();
            assert!(cos > min, "cosine {cos} for {text:?}");
        }
    }
}

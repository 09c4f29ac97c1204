//! `--method trained`, the default: the full-catalog classifier shipped with ttpmap (a delta
//! over all-MiniLM-L6-v2 made by `ttpmap train default`; compiled into the binary from
//! `models/default/`, or `--trained DIR`), with calibrated probabilities and software named in
//! a sentence as evidence (see `ttpmap_ml::trained`).
//!
//! The base encoder resolves as for the dense methods (`--model`, `TTPMAP_MODEL`, the cache,
//! the shared models folder, a download). When it cannot be had, the method says so in one
//! line and falls back to BM25; its results then name `bm25` as their method. A shipped model
//! that is missing, corrupt or made for another base model is an error, never a fallback.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ttpmap_core::pipeline::{Bm25Scorer, SentenceScorer};
use ttpmap_ml::trained::{Mentions, TrainedModel, TrainedScorer};
use ttpmap_ml::ModelDir;

use super::{bm25_index, compute_device, BuildContext, MethodSpec};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/default_model.rs"));
}

pub const SPEC: MethodSpec = MethodSpec {
    name: "trained",
    help: "The default: the trained full-catalog classifier shipped with ttpmap (calibrated \
           confidence, software as evidence) over all-MiniLM-L6-v2; falls back to BM25, saying \
           so, when that base model cannot be had",
    build,
};

fn build(ctx: &BuildContext<'_>) -> anyhow::Result<Box<dyn SentenceScorer>> {
    let base = match super::model_path(ctx.assets, ctx.args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "ttpmap: the default method needs the base model all-MiniLM-L6-v2 and it could \
                 not be had ({e:#}); pass --model DIR or set TTPMAP_MODEL (e.g. \
                 ../shared/models/all-MiniLM-L6-v2), or run once online. Falling back to BM25: \
                 results are marked \"bm25\"."
            );
            return Ok(Box::new(Bm25Scorer::new(bm25_index(ctx.catalog, ctx.args)?)));
        }
    };
    let md = ModelDir::open(&base)
        .with_context(|| format!("opening the base model folder {}", base.display()))?;
    let model = open(ctx.args.trained.as_deref(), &md)?;
    let catalog_version = ctx.catalog.version();
    match &model.manifest().classifier.attack_version {
        Some(v) if v != catalog_version => tracing::warn!(
            "the default model was trained on ATT&CK {v}; the catalog is {catalog_version} \
             (its labels were remapped when it was trained; new techniques are not proposed)"
        ),
        _ => {}
    }
    Ok(Box::new(TrainedScorer::new(
        model,
        Mentions::from_catalog(ctx.catalog),
    )))
}

/// Name of the built-in model in messages.
pub const BUILT_IN: &str = "<built-in models/default>";

/// The shipped model: `dir` when given, else the one compiled in.
pub fn open(dir: Option<&Path>, base: &ModelDir) -> anyhow::Result<TrainedModel> {
    let device = compute_device();
    match dir {
        Some(d) => TrainedModel::open(d, base, &device)
            .with_context(|| format!("loading the default model in {}", d.display())),
        None => {
            if embedded::FILES.is_empty() {
                anyhow::bail!(
                    "this binary was built without models/default (the shipped default model); \
                     pass --trained DIR, make one with `ttpmap train default`, or use --method bm25"
                );
            }
            let read = |name: &str| -> ttpmap_ml::Result<Vec<u8>> {
                embedded::FILES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, b)| b.to_vec())
                    .ok_or_else(|| ttpmap_ml::Error::Artifact {
                        path: PathBuf::from(BUILT_IN).join(name),
                        message: "file is missing from the built-in model".into(),
                    })
            };
            TrainedModel::from_files(Path::new(BUILT_IN), &read, base, &device)
                .context("loading the built-in default model")
        }
    }
}

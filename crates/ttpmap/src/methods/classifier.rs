//! `--method classifier`: a trained label-attention classifier artifact (`--model DIR`, written
//! by `ttpmap train classifier`; chosen automatically when `--model` is one and no method is
//! given).

use anyhow::Context;
use ttpmap_ml::{artifact, Artifact, ClassifierScorer};

use super::{compute_device, BuildContext, MethodArgs, MethodSpec};

pub const SPEC: MethodSpec = MethodSpec {
    name: "classifier",
    help: "A trained label-attention classifier (--model DIR, an artifact written by \
           `ttpmap train classifier`; chosen automatically when --model is one)",
    build: |ctx| {
        if !model_is_artifact(ctx.args) {
            anyhow::bail!(
                "--method classifier needs --model DIR, a model folder written by `ttpmap train classifier` (with manifest.json){}",
                ctx.args
                    .model
                    .as_ref()
                    .map(|p| if p.is_file() {
                        format!("; {}", crate::hub::file_not_folder(p))
                    } else {
                        format!("; {} is not one", p.display())
                    })
                    .unwrap_or_default()
            );
        }
        Ok(Box::new(open(ctx)?))
    },
};

/// Whether `--model` is a classifier artifact (a folder with manifest.json).
pub fn model_is_artifact(args: &MethodArgs) -> bool {
    args.model.as_deref().is_some_and(artifact::is_artifact)
}

/// Opens the classifier artifact in `--model`, warning when it was trained on another ATT&CK
/// version than the catalog's.
pub fn open(ctx: &BuildContext<'_>) -> anyhow::Result<ClassifierScorer> {
    let dir = ctx.args.model.clone().unwrap_or_default();
    let art = Artifact::open(&dir, &compute_device())
        .with_context(|| format!("loading the classifier in {}", dir.display()))?;
    let version = ctx.catalog.version();
    match &art.manifest().attack_version {
        Some(v) if v != version => tracing::warn!(
            "classifier {} was trained on ATT&CK {v}; the catalog is {version}",
            dir.display()
        ),
        _ => {}
    }
    Ok(ClassifierScorer::new(art))
}

/// Scores every sentence of `ds` with the ensemble and each seed alone (see
/// `ClassifierScorer::score_dataset_per_seed`), with a progress bar.
pub fn score_per_seed(
    clf: &ClassifierScorer,
    ds: &ttpmap_core::dataset::Dataset,
    quiet: bool,
) -> anyhow::Result<(
    Vec<ttpmap_core::eval::ScoredSentence>,
    Vec<Vec<ttpmap_core::eval::ScoredSentence>>,
)> {
    let pb = crate::progress::bar(
        ds.sentences().count() as u64,
        &format!("scoring {} {} (every seed)", ds.name, ds.split),
        quiet,
    );
    let out = clf
        .score_dataset_per_seed(ds, &mut |d| pb.set_position(d as u64))
        .with_context(|| format!("classifying {} with {}", ds.name, clf.artifact().dir().display()))?;
    pb.finish_and_clear();
    Ok(out)
}

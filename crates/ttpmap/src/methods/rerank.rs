//! `--method rerank` (and `--reranker DIR` with another method): a first stage's candidates
//! reranked by a cross-encoder (`ttpmap_ml::rerank::RerankScorer`). The first stage is BM25 for
//! `rerank`, else the chosen method (bm25 or hybrid); sentences whose first-stage confidence
//! reaches that method's default threshold are reranked.

use anyhow::Context;
use ttpmap_core::pipeline::{ScoreOptions, SentenceScorer};
use ttpmap_ml::rerank::RerankScorer;

use super::{bm25, compute_device, hybrid, BuildContext, MethodArgs, MethodSpec, Registry};

pub const SPEC: MethodSpec = MethodSpec {
    name: "rerank",
    help: "BM25 candidates reranked by a cross-encoder (--reranker DIR, written by \
           `ttpmap train reranker`); --reranker with bm25 or hybrid reranks that method's \
           candidates",
    build,
};

fn build(ctx: &BuildContext<'_>) -> anyhow::Result<Box<dyn SentenceScorer>> {
    let ce = open_reranker(ctx.args)?;
    let first_method = if ctx.args.is(SPEC.name) {
        bm25::SPEC.name
    } else {
        ctx.args.method.as_str()
    };
    if ![bm25::SPEC.name, hybrid::SPEC.name].contains(&first_method) {
        anyhow::bail!("--reranker reranks bm25 or hybrid candidates, not {first_method}");
    }
    let first_args = MethodArgs {
        method: first_method.to_string(),
        reranker: None,
        ..ctx.args.clone()
    };
    let mut first = Registry::builtin().build(&BuildContext {
        args: &first_args,
        ..*ctx
    })?;
    let flag = first.default_threshold();
    first.configure(&ScoreOptions {
        top_k: ctx.args.rerank_candidates,
        with_evidence: false,
        label_space: None,
    });
    let texts = crate::rerank::candidate_texts(ctx.catalog, &ce.candidate_text_config());
    let mut s = RerankScorer::new(first, ce, texts);
    s.candidates = ctx.args.rerank_candidates;
    s.flag_threshold = flag;
    Ok(Box::new(s))
}

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

//! `--method hybrid`: two scorers fused with reciprocal rank fusion
//! (`ttpmap_core::pipeline::HybridScorer`): BM25 and dense, or, with a classifier artifact as
//! `--model`, the classifier and BM25 (BM25 finds techniques outside the classifier's labels).

use ttpmap_core::pipeline::{Bm25Scorer, HybridScorer};

use super::{bm25_index, classifier, dense, MethodSpec};

pub const SPEC: MethodSpec = MethodSpec {
    name: "hybrid",
    help: "BM25 and dense fused with reciprocal rank fusion; with a classifier artifact as \
           --model, the classifier and BM25 fused",
    build: |ctx| {
        let bm25 = Bm25Scorer::new(bm25_index(ctx.catalog, ctx.args)?);
        if classifier::model_is_artifact(ctx.args) {
            let clf = classifier::open(ctx)?;
            return Ok(Box::new(HybridScorer::new(clf, bm25)));
        }
        Ok(Box::new(HybridScorer::new(bm25, dense::dense_scorer(ctx)?)))
    },
};

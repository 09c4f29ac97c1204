//! `--method bm25`: BM25 over ATT&CK technique descriptions and procedure examples (the
//! lexical baseline; see `ttpmap_core::pipeline::Bm25Scorer`).

use ttpmap_core::pipeline::Bm25Scorer;

use super::{bm25_index, MethodSpec};

pub const SPEC: MethodSpec = MethodSpec {
    name: "bm25",
    help: "BM25 over ATT&CK technique descriptions and procedure examples (lexical baseline)",
    build: |ctx| Ok(Box::new(Bm25Scorer::new(bm25_index(ctx.catalog, ctx.args)?))),
};

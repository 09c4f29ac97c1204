//! Building the scoring method a command asked for (`--method`), with its cached indexes.

use anyhow::Context;
use ttpmap_core::attack::Catalog;
use ttpmap_core::pipeline::{Bm25Scorer, SentenceScorer};
use ttpmap_core::retrieve::{technique_documents, Analyzer, Bm25Index, Bm25Params, DocOptions};

use crate::assets::Assets;

/// Extraction and ranking methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// BM25 over ATT&CK technique descriptions and procedure examples (lexical baseline).
    Bm25,
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
}

impl Default for MethodArgs {
    fn default() -> Self {
        MethodArgs {
            method: Method::Bm25,
            no_procedures: false,
        }
    }
}

/// A ready scorer with its default threshold.
pub enum Scorer {
    Bm25(Bm25Scorer),
}

impl Scorer {
    pub fn build(_assets: &Assets, catalog: &Catalog, args: &MethodArgs) -> anyhow::Result<Scorer> {
        match args.method {
            Method::Bm25 => Ok(Scorer::Bm25(Bm25Scorer::new(bm25_index(catalog, args)?))),
        }
    }

    pub fn as_scorer(&self) -> &dyn SentenceScorer {
        match self {
            Scorer::Bm25(s) => s,
        }
    }

    /// The threshold used when the user gives none (tuned on training data: see README).
    pub fn default_threshold(&self) -> f32 {
        match self {
            Scorer::Bm25(_) => Bm25Scorer::DEFAULT_THRESHOLD,
        }
    }
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

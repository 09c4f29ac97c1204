//! The scoring methods the CLI and the server offer by name (`--method`), built from one
//! registry.
//!
//! A method is a type implementing [`SentenceScorer`] (core's trait: name, scores, default
//! threshold, `configure` with [`ScoreOptions`]) plus a [`MethodSpec`] that says how to build it
//! from the command's [`MethodArgs`]. Adding a method is one file in this folder that defines
//! `pub const SPEC: MethodSpec` and one name added to the `registry!` line below; nothing else
//! matches on method names (see the `a_new_method_is_one_spec` test).
//!
//! Two rules cut across methods and live in [`build`]: `--reranker DIR` reranks the chosen
//! method's candidates (see [`rerank`]), and a classifier artifact passed as `--model` with the
//! default method selects the classifier.

use std::path::PathBuf;

use anyhow::Context;
use ttpmap_core::attack::Catalog;
use ttpmap_core::pipeline::SentenceScorer;
use ttpmap_core::retrieve::{technique_documents, Analyzer, Bm25Index, Bm25Params, DocOptions};
use ttpmap_ml::Device;

use crate::assets::Assets;

/// Declares the method modules and the registry in one place: one name per method.
macro_rules! registry {
    ($($method:ident),+ $(,)?) => {
        $(pub mod $method;)+
        /// Every built-in method, in the order `--help` lists them.
        pub const METHODS: &[MethodSpec] = &[$($method::SPEC),+];
    };
}

registry!(trained, bm25, dense, hybrid, classifier, rerank);

pub use self::rerank::open_reranker;

/// The method used when `--method` is not given.
pub const DEFAULT_METHOD: &str = "trained";

/// What a method's builder gets: the assets (model folders, cache), the ATT&CK catalog and the
/// command's method flags.
pub struct BuildContext<'a> {
    pub assets: &'a Assets,
    pub catalog: &'a Catalog,
    pub args: &'a MethodArgs,
}

/// One scoring method: its `--method` name, its help line and its builder.
#[derive(Clone, Copy)]
pub struct MethodSpec {
    /// The `--method` value, also the scorer's [`SentenceScorer::name`].
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Builds the ready scorer (models loaded, indexes built or read from the cache).
    pub build: fn(&BuildContext<'_>) -> anyhow::Result<Box<dyn SentenceScorer>>,
}

/// A set of methods by name: [`Registry::builtin`] holds [`METHODS`].
#[derive(Clone)]
pub struct Registry {
    methods: Vec<MethodSpec>,
}

impl Registry {
    /// The built-in methods.
    pub fn builtin() -> Self {
        Registry {
            methods: METHODS.to_vec(),
        }
    }

    /// Adds `spec` (replacing a method of the same name).
    pub fn register(&mut self, spec: MethodSpec) {
        self.methods.retain(|m| m.name != spec.name);
        self.methods.push(spec);
    }

    /// The method called `name`.
    pub fn get(&self, name: &str) -> anyhow::Result<&MethodSpec> {
        self.methods
            .iter()
            .find(|m| m.name == name)
            .with_context(|| {
                format!(
                    "unknown method {name:?}; the methods are {}",
                    self.names().join(", ")
                )
            })
    }

    /// Method names in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.methods.iter().map(|m| m.name).collect()
    }

    /// Builds the method the flags ask for (see [`build`]).
    pub fn build(&self, ctx: &BuildContext<'_>) -> anyhow::Result<Box<dyn SentenceScorer>> {
        let args = ctx.args;
        // `--reranker` reranks the chosen method's candidates; a classifier artifact as `--model`
        // with the default method is the classifier.
        let name = if args.reranker.is_some() && args.method != rerank::SPEC.name {
            rerank::SPEC.name
        } else if args.method == DEFAULT_METHOD && classifier::model_is_artifact(args) {
            classifier::SPEC.name
        } else {
            args.method.as_str()
        };
        let scorer = (self.get(name)?.build)(ctx)?;
        // Every method reads the technique ids a report cites (the default model already does).
        Ok(if scorer.reads_citations() {
            scorer
        } else {
            Box::new(ttpmap_core::software::CitingScorer::new(
                scorer,
                ttpmap_core::software::CitedIds::from_catalog(ctx.catalog),
            ))
        })
    }
}

/// Builds the scorer `args` ask for with the built-in methods: `--method` by name, with two
/// rules across methods: `--reranker DIR` reranks that method's candidates, and a classifier
/// artifact as `--model` with the default method (trained) selects `classifier`.
pub fn build(
    assets: &Assets,
    catalog: &Catalog,
    args: &MethodArgs,
) -> anyhow::Result<Box<dyn SentenceScorer>> {
    Registry::builtin().build(&BuildContext {
        assets,
        catalog,
        args,
    })
}

/// The `--method` value parser: the registry's names, each with its help line.
fn method_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        METHODS
            .iter()
            .map(|m| clap::builder::PossibleValue::new(m.name).help(m.help)),
    )
}

/// `--method` and its settings, shared by extract, rank, eval and serve.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodArgs {
    /// Scoring method (default: trained, the full-catalog model built into the binary).
    #[arg(long, default_value = DEFAULT_METHOD, value_parser = method_parser())]
    pub method: String,
    /// BM25: leave ATT&CK procedure examples out of the technique documents.
    #[arg(long)]
    pub no_procedures: bool,
    /// Base encoder of the default method (trained) and of dense/hybrid, or a classifier
    /// artifact (`classifier`): a sentence-transformers model folder or Hugging Face repo id
    /// (default: `<cache>/models/all-MiniLM-L6-v2`, then `$TTPMAP_SHARED/models`, downloaded from
    /// sentence-transformers/all-MiniLM-L6-v2 when missing).
    #[arg(long, env = "TTPMAP_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Dense/hybrid: index at most this many ATT&CK procedure examples per technique (plus one
    /// description per technique). The index is cached per model and ATT&CK version; texts
    /// whose embeddings ship with ttpmap (all of ATT&CK 18.1 for all-MiniLM-L6-v2) are not
    /// encoded again, others are (minutes for thousands of texts on a CPU).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub dense_max_examples: usize,
    /// Dense/hybrid: how the nearest neighbours vote (max cosine, or similarity-weighted
    /// share of the neighbourhood).
    #[arg(long, value_enum, default_value_t = dense::DenseVote::Max)]
    pub dense_vote: dense::DenseVote,
    /// Default method: a shipped-model folder (made by `ttpmap train default --ship DIR`) to
    /// use instead of the one built into the binary.
    #[arg(long, env = "TTPMAP_TRAINED", value_name = "DIR")]
    pub trained: Option<PathBuf>,
    /// Cross-encoder reranker folder (Hugging Face BertForSequenceClassification layout):
    /// reranks the first stage's top `--rerank-candidates` techniques.
    #[arg(long, value_name = "DIR")]
    pub reranker: Option<PathBuf>,
    /// First-stage candidates the reranker scores per sentence.
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub rerank_candidates: usize,
}

impl Default for MethodArgs {
    fn default() -> Self {
        MethodArgs {
            method: DEFAULT_METHOD.to_string(),
            no_procedures: false,
            model: None,
            dense_max_examples: 20,
            dense_vote: dense::DenseVote::Max,
            trained: None,
            reranker: None,
            rerank_candidates: 20,
        }
    }
}

impl MethodArgs {
    /// Whether `--method` is `name`.
    pub fn is(&self, name: &str) -> bool {
        self.method == name
    }
}

/// The operating points (tuned and default thresholds from the model's own validation data) of
/// a trained scorer (the classifier or the default model); `None` for untrained methods.
pub fn operating_points(
    scorer: &dyn SentenceScorer,
) -> Option<ttpmap_core::protocol::OperatingPoints> {
    let any = scorer.as_any()?;
    any.downcast_ref::<ttpmap_ml::ClassifierScorer>()
        .map(ttpmap_ml::ClassifierScorer::operating_points)
        .or_else(|| {
            any.downcast_ref::<ttpmap_ml::trained::TrainedScorer>()
                .map(ttpmap_ml::trained::TrainedScorer::operating_points)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::builder::TypedValueParser;
    use ttpmap_core::pipeline::{find_scorer, ScoreOptions};
    use ttpmap_core::{Evidence, Prediction, TechniqueId};

    /// A whole method in a few lines: a scorer type and its spec. Registered, it is built by
    /// name like the built-in ones; nothing else in the application changes.
    struct Keyword {
        top_k: usize,
    }

    impl SentenceScorer for Keyword {
        fn name(&self) -> &str {
            "keyword"
        }
        fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
            Ok(sentences
                .iter()
                .map(|s| {
                    let hit = s.to_lowercase().contains("powershell") && self.top_k > 0;
                    hit.then(|| Prediction {
                        technique: TechniqueId::parse("T1059.001").unwrap(),
                        score: 0.9,
                        raw_score: 1.0,
                        evidence: Evidence {
                            method: "keyword".into(),
                            reasons: vec!["powershell".into()],
                        },
                    })
                    .into_iter()
                    .collect()
                })
                .collect())
        }
        fn default_threshold(&self) -> f32 {
            0.8
        }
        fn configure(&mut self, options: &ScoreOptions) {
            self.top_k = options.top_k;
        }
        fn as_any(&self) -> Option<&dyn std::any::Any> {
            Some(self)
        }
    }

    const KEYWORD: MethodSpec = MethodSpec {
        name: "keyword",
        help: "T1059.001 when a sentence says PowerShell (a test method)",
        build: |_| Ok(Box::new(Keyword { top_k: 10 })),
    };

    fn test_assets() -> Assets {
        Assets::new(&crate::cli::GlobalArgs {
            attack: None,
            cache_dir: None,
            data_dir: None,
            offline: true,
            verbose: 0,
            quiet: true,
        })
    }

    #[test]
    fn a_new_method_is_one_spec() {
        let mut registry = Registry::builtin();
        assert!(registry.get("keyword").is_err());
        registry.register(KEYWORD);
        assert!(registry.names().contains(&"keyword"));
        let assets = test_assets();
        let catalog = Catalog::from_slice(
            br#"{"type": "bundle", "id": "bundle--1", "objects": [
 {"type": "attack-pattern", "id": "attack-pattern--1", "name": "PowerShell",
  "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z",
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1059.001"}]}]}"#,
            std::path::Path::new("empty.json"),
        )
        .unwrap();
        let args = MethodArgs {
            method: "keyword".into(),
            ..MethodArgs::default()
        };
        let mut scorer = registry
            .build(&BuildContext {
                assets: &assets,
                catalog: &catalog,
                args: &args,
            })
            .unwrap();
        assert_eq!(scorer.name(), "keyword");
        assert_eq!(scorer.default_threshold(), 0.8);
        let preds = scorer
            .score(&["They ran PowerShell.", "Nothing here."])
            .unwrap();
        assert_eq!(preds[0][0].technique.to_string(), "T1059.001");
        assert!(preds[1].is_empty());
        scorer.configure(&ScoreOptions::default());
        assert!(scorer.score(&["PowerShell"]).unwrap()[0].is_empty());
        assert!(find_scorer::<Keyword>(scorer.as_ref()).is_some());
    }

    #[test]
    fn every_builtin_method_is_offered_and_unknown_names_are_refused() {
        let registry = Registry::builtin();
        assert_eq!(
            registry.names(),
            ["trained", "bm25", "dense", "hybrid", "classifier", "rerank"]
        );
        let err = registry.get("bm24").err().unwrap().to_string();
        assert!(
            err.contains("bm24") && err.contains("trained, bm25, dense"),
            "{err}"
        );
        let names: Vec<String> = method_parser()
            .possible_values()
            .unwrap()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(names, registry.names());
    }
}

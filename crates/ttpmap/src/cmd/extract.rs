//! `ttpmap extract FILE|URL...`: techniques per sentence and per document, in the format asked.

use std::path::PathBuf;

use anyhow::Context;
use ttpmap_core::ingest::{self, IngestOptions};
use ttpmap_core::pipeline::{self, ExtractOptions};
use ttpmap_core::{Document, Extraction};

use crate::assets::Assets;
use crate::methods::MethodArgs;
use crate::render::{render_extractions, OutputFormat, RenderOptions};

#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Reports to read: .txt, .md, .html, .pdf files, or http(s) URLs.
    #[arg(required = true, value_name = "FILE|URL")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub method: MethodArgs,
    /// Keep predictions with at least this confidence (default: the method's tuned value).
    #[arg(long, value_name = "P")]
    pub threshold: Option<f32>,
    /// At most this many techniques per sentence.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_per_sentence: usize,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write to this file instead of stdout (written only when complete).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Refuse inputs larger than this many bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub max_bytes: u64,
    #[command(flatten)]
    pub render: RenderOptions,
}

pub fn run(assets: &Assets, args: ExtractArgs) -> anyhow::Result<()> {
    let ingest_opts = IngestOptions {
        max_bytes: args.max_bytes,
        ..IngestOptions::default()
    };
    // Read every input first: a bad input fails the run before any model work or output.
    let docs: Vec<Document> = args
        .inputs
        .iter()
        .map(|input| load_input(input, &ingest_opts))
        .collect::<anyhow::Result<_>>()?;
    let catalog = assets.catalog()?;
    let scorer = crate::methods::build(assets, &catalog, &args.method)?;
    let options = ExtractOptions {
        threshold: args.threshold.unwrap_or(scorer.default_threshold()),
        max_per_sentence: args.max_per_sentence,
        ..ExtractOptions::default()
    };
    let lookup = |id: &ttpmap_core::TechniqueId| catalog.technique(id);
    let extractions: Vec<Extraction> = docs
        .iter()
        .map(|doc| {
            pipeline::extract(doc, scorer.as_ref(), &lookup, catalog.version(), &options)
                .with_context(|| format!("extracting techniques from {}", doc.source))
        })
        .collect::<anyhow::Result<_>>()?;
    if let (Some(r), false) = (
        ttpmap_core::pipeline::find_scorer::<ttpmap_ml::rerank::RerankScorer>(scorer.as_ref()),
        assets.quiet(),
    ) {
        let c = r.cost();
        eprintln!(
            "reranker: {} of {} sentences flagged by the first stage, {} (sentence, technique) pairs scored",
            c.reranked_sentences, c.sentences, c.pairs
        );
    }
    let rendered = render_extractions(&extractions, &catalog, args.format, &args.render)?;
    crate::output::write_output(args.output.as_deref(), rendered.as_bytes())
}

/// Reads a file or fetches a URL into a normalised, segmented document.
pub fn load_input(input: &str, opts: &IngestOptions) -> anyhow::Result<Document> {
    if input.starts_with("http://") || input.starts_with("https://") {
        let (bytes, mime) = crate::download::fetch_bytes(input, opts.max_bytes)
            .with_context(|| format!("fetching {input}"))?;
        let format = mime.as_deref().and_then(ingest::Format::from_mime);
        Ok(ingest::from_bytes(input, &bytes, format, opts)?)
    } else {
        Ok(ingest::load_path(std::path::Path::new(input), opts)?)
    }
}

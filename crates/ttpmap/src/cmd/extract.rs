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
    /// Reports to read: .txt, .md, .html, .pdf files, or http(s) URLs. Every input is
    /// processed: the results of the readable ones are output, and the failures are listed at
    /// the end (exit code 1).
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
    /// Write to this file instead of stdout (written only when complete, with the results of
    /// the inputs that could be read).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Refuse inputs larger than this many bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub max_bytes: u64,
    #[command(flatten)]
    pub render: RenderOptions,
}

/// Extracts from every input: the results of those that could be read and scored are
/// rendered (and written), then every failure is reported together as one error (exit code 1).
/// When no input can be read, nothing is printed and no model is loaded.
pub fn run(assets: &Assets, args: ExtractArgs) -> anyhow::Result<()> {
    let ingest_opts = IngestOptions {
        max_bytes: args.max_bytes,
        ..IngestOptions::default()
    };
    let mut failures: Vec<anyhow::Error> = Vec::new();
    let mut docs: Vec<Document> = Vec::new();
    for input in &args.inputs {
        match load_input(input, &ingest_opts) {
            Ok(doc) => docs.push(doc),
            Err(e) => failures.push(e),
        }
    }
    if docs.is_empty() {
        return Err(batch_error(failures, args.inputs.len()));
    }
    let catalog = assets.catalog()?;
    let scorer = crate::methods::build(assets, &catalog, &args.method)?;
    let options = ExtractOptions {
        threshold: args.threshold.unwrap_or(scorer.default_threshold()),
        max_per_sentence: args.max_per_sentence,
        ..ExtractOptions::default()
    };
    let lookup = |id: &ttpmap_core::TechniqueId| catalog.technique(id);
    let mut extractions: Vec<Extraction> = Vec::with_capacity(docs.len());
    for doc in &docs {
        match pipeline::extract(doc, scorer.as_ref(), &lookup, catalog.version(), &options) {
            Ok(x) => extractions.push(x),
            Err(e) => failures.push(
                anyhow::Error::new(e).context(format!("extracting techniques from {}", doc.source)),
            ),
        }
    }
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
    if !extractions.is_empty() {
        let rendered = render_extractions(&extractions, &catalog, args.format, &args.render)?;
        crate::output::write_output(args.output.as_deref(), rendered.as_bytes())?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(batch_error(failures, args.inputs.len()))
    }
}

/// One error for a batch: the failure of a single input as it is, else a list (one per line).
fn batch_error(mut failures: Vec<anyhow::Error>, inputs: usize) -> anyhow::Error {
    if inputs == 1 && failures.len() == 1 {
        return failures.remove(0);
    }
    let list: Vec<String> = failures
        .iter()
        .map(|e| format!("  {}", super::error_chain(e)))
        .collect();
    anyhow::anyhow!(
        "{} of {inputs} inputs failed:\n{}",
        failures.len(),
        list.join("\n")
    )
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

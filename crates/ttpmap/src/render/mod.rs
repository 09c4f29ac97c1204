//! Rendering extraction results in the format a user asked for. The formats themselves live in
//! `ttpmap_core::export`; this adds the terminal table.

pub mod catalog;

use std::fmt::Write;

use ttpmap_core::attack::Catalog;
use ttpmap_core::eval::render_table;
use ttpmap_core::export::{self, shown_score as shown, ExportFormat, ExportOptions};
use ttpmap_core::Extraction;

/// Output formats of `extract`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable summary and evidence.
    Table,
    /// One JSON array of documents (schema in the README).
    Json,
    /// One JSON document per line.
    Jsonl,
    /// One row per sentence prediction.
    Csv,
    /// Markdown summary and evidence.
    Markdown,
    /// ATT&CK Navigator layer (format 4.5).
    Navigator,
    /// STIX 2.1 bundle with a report referencing ATT&CK attack-patterns.
    Stix,
    /// MISP event JSON: a MISP galaxy tag per technique, evidence sentences as attributes.
    Misp,
}

/// Options of the layer and bundle exports.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderOptions {
    /// Navigator layer name (default: the document title or file name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// STIX and MISP: ids derived from content instead of random, for reproducible output.
    #[arg(long)]
    pub deterministic: bool,
    /// STIX and MISP: fixed timestamp (RFC 3339) instead of the current time, for reproducible
    /// output.
    #[arg(long, value_name = "TIME")]
    pub clock: Option<String>,
}

pub fn render_extractions(
    extractions: &[Extraction],
    catalog: &Catalog,
    format: OutputFormat,
    opts: &RenderOptions,
) -> anyhow::Result<String> {
    let _span = tracing::info_span!("export", format = ?format).entered();
    let lookup = |id: &ttpmap_core::TechniqueId| catalog.technique(id);
    let format = match format {
        OutputFormat::Table => return Ok(table(extractions)),
        OutputFormat::Json => ExportFormat::Json,
        OutputFormat::Jsonl => ExportFormat::Jsonl,
        OutputFormat::Csv => ExportFormat::Csv,
        OutputFormat::Markdown => ExportFormat::Markdown,
        OutputFormat::Navigator => ExportFormat::Navigator,
        OutputFormat::Stix => ExportFormat::Stix,
        OutputFormat::Misp => ExportFormat::Misp,
    };
    let mut export_opts = ExportOptions::default();
    export_opts.navigator.name = opts.name.clone();
    export_opts.navigator.attack_version = Some(catalog.version().to_string());
    export_opts.stix.deterministic = opts.deterministic;
    export_opts.stix.clock = opts.clock.clone();
    export_opts.misp.deterministic = opts.deterministic;
    export_opts.misp.clock = opts.clock.clone();
    Ok(export::export(format, extractions, &lookup, &export_opts)?)
}

/// Terminal summary: per document the technique table, then the evidence sentences.
fn table(extractions: &[Extraction]) -> String {
    let mut out = String::new();
    for ex in extractions {
        let title = ex
            .title
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}{title}\n{} sentences, {} with techniques; method {} at threshold {:.2}; ATT&CK {}\n",
            ex.source,
            ex.sentence_count,
            ex.sentences.len(),
            ex.method,
            ex.threshold,
            ex.attack_version
        );
        if ex.techniques.is_empty() {
            let _ = writeln!(out, "No technique above the threshold.\n");
            continue;
        }
        let rows: Vec<Vec<String>> = ex
            .techniques
            .iter()
            .map(|t| {
                vec![
                    t.technique.to_string(),
                    truncate(&t.name, 40),
                    t.tactics.join(", "),
                    shown(t.score),
                    t.sentences.len().to_string(),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &["technique", "name", "tactics", "score", "sentences"],
            &rows,
        ));
        let _ = writeln!(out, "\nEvidence:");
        for s in &ex.sentences {
            let ids: Vec<String> = s
                .predictions
                .iter()
                .map(|p| format!("{} {}", p.technique, shown(p.score)))
                .collect();
            let _ = writeln!(
                out,
                "  [{}] {}\n       {}",
                s.sentence,
                ids.join(", "),
                truncate(&s.text, 160)
            );
        }
        out.push('\n');
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

//! `ttpmap rank "text"`: the top ATT&CK techniques for a piece of text, with scores.

use ttpmap_core::eval::render_table;

use crate::assets::Assets;
use crate::methods::{bm25_index, MethodArgs};

#[derive(Debug, clap::Args)]
pub struct RankArgs {
    /// The text to rank techniques for (a sentence or a passage; the default model reads a
    /// passage sentence by sentence).
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// How many techniques to print.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub top: usize,
    /// Show how each query term contributed to the top technique's score.
    #[arg(long)]
    pub explain: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With --reranker: list every technique whose probability reaches this.
    #[arg(long, value_name = "P", default_value_t = ttpmap_ml::rerank::RerankScorer::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    #[command(flatten)]
    pub method: MethodArgs,
}

pub fn run(assets: &Assets, args: RankArgs) -> anyhow::Result<()> {
    if args.text.trim().is_empty() {
        anyhow::bail!("nothing to rank: the text is empty");
    }
    if args.method.reranker.is_some() || args.method.is(crate::methods::rerank::SPEC.name) {
        return rerank(assets, &args);
    }
    if !args.method.is(crate::methods::bm25::SPEC.name) {
        return scored(assets, &args);
    }
    let catalog = assets.catalog()?;
    let index = bm25_index(&catalog, &args.method)?;
    let hits = index.search(&args.text, args.top);
    if hits.is_empty() && !args.json {
        println!("No technique matches: no query term occurs in the ATT&CK catalog.");
        return Ok(());
    }
    let rows: Vec<Row> = hits
        .iter()
        .map(|h| (&h.technique, h.score, &[][..]))
        .collect();
    print_rows(&catalog, &rows, args.json, "bm25", None)?;
    if args.explain && !args.json {
        let top = &hits[0].technique;
        let ex = index
            .explain(&args.text, top)
            .ok_or_else(|| anyhow::anyhow!("no explanation for {top}"))?;
        println!("\nWhy {top} scores {:.3}:", ex.score);
        let rows: Vec<Vec<String>> = ex
            .terms
            .iter()
            .map(|t| {
                vec![
                    t.term.clone(),
                    t.tf.to_string(),
                    t.df.to_string(),
                    format!("{:.3}", t.idf),
                    format!("{:.3}", t.contribution),
                ]
            })
            .collect();
        print!(
            "{}",
            render_table(&["term", "tf", "df", "idf", "contribution"], &rows)
        );
    }
    Ok(())
}

/// One ranked technique: id, score, evidence lines.
type Row<'a> = (&'a ttpmap_core::TechniqueId, f32, &'a [String]);

/// Prints ranked techniques as JSON or a table; `method` (scorers other than BM25) adds the
/// method's name, its evidence and the threshold `extract` keeps at.
fn print_rows(
    catalog: &ttpmap_core::attack::Catalog,
    rows: &[Row],
    json: bool,
    score_header: &str,
    method: Option<(&str, f32)>,
) -> anyhow::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(rank, (id, score, evidence))| {
                let name = catalog.technique(id).map(|t| t.name.as_str()).unwrap_or("");
                let mut v = serde_json::json!({"rank": rank + 1, "technique": id, "name": name, "score": score});
                if let Some((m, _)) = method {
                    v["method"] = m.into();
                    v["evidence"] = serde_json::json!(evidence);
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(rank, (id, score, evidence))| {
            let t = catalog.technique(id);
            let mut row = vec![
                (rank + 1).to_string(),
                id.to_string(),
                t.map(|t| t.name.clone()).unwrap_or_default(),
                t.map(|t| t.tactics.join(", ")).unwrap_or_default(),
                format!("{score:.3}"),
            ];
            if method.is_some() {
                // The first reason is the score itself, already in its column.
                row.push(
                    evidence
                        .iter()
                        .skip(1)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            row
        })
        .collect();
    let mut headers = vec!["rank", "technique", "name", "tactics", score_header];
    if method.is_some() {
        headers.push("evidence");
    }
    print!("{}", render_table(&headers, &table));
    if let Some((m, threshold)) = method {
        println!("method {m}; extract keeps a technique at confidence {threshold:.2} or more");
    }
    Ok(())
}

/// Any other method (the default one included): its top `--top` techniques for the text, read
/// as the method reads a passage (the default model: sentence by sentence, combined by its
/// document rule, as `extract` would score the text as a document), with the confidence
/// `extract` and the API show and the method's evidence.
fn scored(assets: &Assets, args: &RankArgs) -> anyhow::Result<()> {
    let catalog = assets.catalog()?;
    let mut scorer = crate::methods::build(assets, &catalog, &args.method)?;
    scorer.configure(&ttpmap_core::pipeline::ScoreOptions {
        top_k: args.top,
        with_evidence: true,
        label_space: None,
    });
    let mut preds = ttpmap_core::pipeline::score_passages(scorer.as_ref(), &[args.text.as_str()])?
        .pop()
        .unwrap_or_default();
    ttpmap_core::pipeline::sort_predictions(&mut preds);
    preds.truncate(args.top);
    let rows: Vec<Row> = preds
        .iter()
        .map(|p| (&p.technique, p.score, p.evidence.reasons.as_slice()))
        .collect();
    let method = (scorer.name(), scorer.default_threshold());
    print_rows(&catalog, &rows, args.json, "confidence", Some(method))
}

/// BM25 top `--rerank-candidates`, reranked by the cross-encoder: every technique whose
/// probability reaches `--threshold` (multi-label), best first.
fn rerank(assets: &Assets, args: &RankArgs) -> anyhow::Result<()> {
    let catalog = assets.catalog()?;
    let ce = crate::methods::open_reranker(&args.method)?;
    let index = bm25_index(&catalog, &args.method)?;
    let hits = index.search(&args.text, args.method.rerank_candidates);
    if hits.is_empty() {
        println!("No technique matches: no query term occurs in the ATT&CK catalog.");
        return Ok(());
    }
    let texts = crate::rerank::candidate_texts(&catalog, &ce.candidate_text_config());
    let cand: Vec<String> = hits
        .iter()
        .map(|h| {
            texts
                .get(&h.technique)
                .cloned()
                .unwrap_or_else(|| h.technique.to_string())
        })
        .collect();
    let refs: Vec<&str> = cand.iter().map(String::as_str).collect();
    let ranked = ce.rerank(&args.text, &refs)?;
    let kept: Vec<_> = ranked
        .iter()
        .filter(|r| r.score >= args.threshold)
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = ranked
            .iter()
            .enumerate()
            .map(|(rank, r)| {
                let h = &hits[r.index];
                let name = catalog
                    .technique(&h.technique)
                    .map(|t| t.name.as_str())
                    .unwrap_or("");
                serde_json::json!({
                    "rank": rank + 1,
                    "technique": h.technique,
                    "name": name,
                    "probability": r.score,
                    "above_threshold": r.score >= args.threshold,
                    "bm25_rank": r.index + 1,
                    "bm25": h.score,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let shown: Vec<&ttpmap_ml::Ranked> = if kept.is_empty() {
        println!(
            "No technique reaches probability {:.2}; the best of {} BM25 candidates:",
            args.threshold,
            hits.len()
        );
        ranked.iter().take(args.top.min(3)).collect()
    } else {
        kept.into_iter().take(args.top).collect()
    };
    let rows: Vec<Vec<String>> = shown
        .iter()
        .enumerate()
        .map(|(rank, r)| {
            let h = &hits[r.index];
            let t = catalog.technique(&h.technique);
            vec![
                (rank + 1).to_string(),
                h.technique.to_string(),
                t.map(|t| t.name.clone()).unwrap_or_default(),
                format!("{:.3}", r.score),
                (r.index + 1).to_string(),
            ]
        })
        .collect();
    let headers = ["rank", "technique", "name", "probability", "bm25 rank"];
    print!("{}", render_table(&headers, &rows));
    Ok(())
}

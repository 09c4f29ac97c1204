//! `ttpmap rank "text"`: the top ATT&CK techniques for a piece of text, with scores.

use ttpmap_core::eval::render_table;

use crate::assets::Assets;
use crate::methods::{bm25_index, MethodArgs};

#[derive(Debug, clap::Args)]
pub struct RankArgs {
    /// The text to rank techniques for (a sentence or a short description).
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
    #[command(flatten)]
    pub method: MethodArgs,
}

pub fn run(assets: &Assets, args: RankArgs) -> anyhow::Result<()> {
    if args.text.trim().is_empty() {
        anyhow::bail!("nothing to rank: the text is empty");
    }
    if args.method.method != crate::methods::Method::Bm25 {
        anyhow::bail!("rank supports --method bm25 only (use extract for dense and hybrid)");
    }
    let catalog = assets.catalog()?;
    let index = bm25_index(&catalog, &args.method)?;
    let hits = index.search(&args.text, args.top);
    if args.json {
        let rows: Vec<serde_json::Value> = hits
            .iter()
            .enumerate()
            .map(|(rank, h)| {
                let name = catalog.technique(&h.technique).map(|t| t.name.as_str()).unwrap_or("");
                serde_json::json!({"rank": rank + 1, "technique": h.technique, "name": name, "score": h.score})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("No technique matches: no query term occurs in the ATT&CK catalog.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hits
        .iter()
        .enumerate()
        .map(|(rank, h)| {
            let t = catalog.technique(&h.technique);
            vec![
                (rank + 1).to_string(),
                h.technique.to_string(),
                t.map(|t| t.name.clone()).unwrap_or_default(),
                t.map(|t| t.tactics.join(", ")).unwrap_or_default(),
                format!("{:.3}", h.score),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["rank", "technique", "name", "tactics", "bm25"], &rows)
    );
    if args.explain {
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

//! `ttpmap attack info|show|search|embed|update`: inspect the ATT&CK catalog, embed its texts
//! for the dense index, and update the cached bundle.
//! Output goes to stdout (text, or JSON with `--json`); errors name the file or the id.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ttpmap_core::TechniqueId;

use crate::assets::Assets;
use crate::download;
use crate::render::catalog::{show, Info};

#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    #[command(subcommand)]
    pub command: AttackCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AttackCommand {
    /// ATT&CK version, bundle path, fingerprint and counts of the catalog.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One technique: name, tactics, platforms, parent and sub-techniques, description and
    /// procedure examples. A revoked id shows the technique it now maps to.
    Show {
        /// Technique id, e.g. T1059.001.
        id: String,
        /// How many procedure examples to print.
        #[arg(long, default_value_t = 5, value_name = "N")]
        examples: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Search techniques by text (BM25 over names, descriptions and procedure examples);
    /// the same ranking as `ttpmap rank`.
    Search {
        /// Words to look for, e.g. "encoded powershell".
        query: String,
        /// How many techniques to print.
        #[arg(long, short = 'k', default_value_t = 10)]
        top: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Embed every ATT&CK text (technique documents and all procedure examples) with the dense
    /// model and write an embedding store (int8, keyed by text): what `models/embeddings/`
    /// ships, so that `--method dense` builds its index without encoding those texts.
    Embed {
        /// The store file to write (atomically).
        #[arg(
            long,
            value_name = "FILE",
            default_value = "models/embeddings/all-MiniLM-L6-v2.ttpemb"
        )]
        out: PathBuf,
        /// Sentence-transformers model folder (default: all-MiniLM-L6-v2 as the dense methods
        /// resolve it).
        #[arg(long, value_name = "DIR", env = "TTPMAP_MODEL")]
        model: Option<PathBuf>,
    },
    /// Download an ATT&CK Enterprise bundle into the cache folder (replaces the cached one only
    /// when the download is complete and parses as ATT&CK).
    #[command(disable_version_flag = true)]
    Update {
        /// Download from this URL instead of MITRE's attack-stix-data repository.
        #[arg(long, conflicts_with = "version")]
        url: Option<String>,
        /// A published ATT&CK version (e.g. 18.1) instead of the latest.
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
        /// Expected sha256 of the file (64 hex digits).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
}

pub fn run(assets: &Assets, args: AttackArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.command {
        AttackCommand::Search { query, top, json } => {
            drop(out);
            let rank = crate::cmd::rank::RankArgs {
                text: query,
                top,
                explain: false,
                json,
                threshold: ttpmap_ml::rerank::RerankScorer::DEFAULT_THRESHOLD,
                method: crate::methods::MethodArgs::default(),
            };
            return crate::cmd::rank::run(assets, rank);
        }
        AttackCommand::Info { json } => {
            let catalog = assets.catalog()?;
            let info = Info::of(&catalog);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
            } else {
                info.render(&mut out)?;
            }
        }
        AttackCommand::Show { id, examples, json } => {
            let id = TechniqueId::parse(&id)?;
            let catalog = assets.catalog()?;
            show(&catalog, &id, examples, json, &mut out)?;
        }
        AttackCommand::Embed { out: file, model } => {
            drop(out);
            return embed(assets, &file, model.as_deref());
        }
        AttackCommand::Update {
            url,
            version,
            sha256,
        } => {
            if assets.global.offline {
                bail!("`ttpmap attack update` needs the network, but --offline is set");
            }
            let url = match (url, version) {
                (Some(u), _) => u,
                (None, Some(v)) => download::attack_url_for_version(&v)?,
                (None, None) => download::ATTACK_URL.to_string(),
            };
            let (report, catalog) = assets.update_attack(&url, sha256.as_deref())?;
            writeln!(
                out,
                "Updated {} to ATT&CK {} ({} bytes, sha256 {}) from {url}",
                catalog.source().display(),
                catalog.version(),
                report.bytes,
                report.sha256
            )?;
            if let Some(p) = &assets.global.attack {
                eprintln!(
                    "note: --attack / $TTPMAP_ATTACK ({}) still takes precedence over the cached bundle",
                    p.display()
                );
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `ttpmap attack embed`: every text of the dense index (all procedure examples) encoded and
/// written as an embedding store.
fn embed(assets: &Assets, file: &Path, model: Option<&Path>) -> anyhow::Result<()> {
    use ttpmap_ml::dense::{index_entries, model_fingerprint, DenseIndex};
    use ttpmap_ml::dense_store::{EmbeddingStore, StoreHeader};
    use ttpmap_ml::{Embedder, EmbedderConfig, ModelDir};

    let started = std::time::Instant::now();
    let catalog = assets.catalog()?;
    let path = crate::hub::resolve_model(assets, model)?;
    let md = ModelDir::open(&path)
        .with_context(|| format!("opening the model folder {}", path.display()))?;
    let embedder = Embedder::from_model_dir(
        &md,
        EmbedderConfig::default(),
        &crate::methods::compute_device(),
    )
    .with_context(|| format!("loading the model in {}", path.display()))?;
    let entries = index_entries(&catalog, usize::MAX);
    let pb = crate::progress::bar(
        entries.len() as u64,
        "embedding every ATT&CK text",
        assets.quiet(),
    );
    let index = DenseIndex::build(&embedder, &entries, &mut |done, _| {
        pb.set_position(done as u64)
    })
    .context("embedding ATT&CK's texts")?;
    pb.finish_and_clear();
    let header = StoreHeader {
        format: 0,
        model: model_fingerprint(&md)?,
        model_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dim: 0,
        rows: 0,
        source: format!(
            "ATT&CK {} (bundle fingerprint {}): {} technique documents and procedure examples",
            catalog.version(),
            catalog.fingerprint(),
            entries.len()
        ),
        command: format!(
            "ttpmap {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
    };
    let store = EmbeddingStore::new(
        header,
        index.dim(),
        (0..index.len()).map(|i| (index.texts()[i].as_str(), index.row(i))),
    )?;
    store.write(file)?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} texts ({} distinct) embedded by {} to {} ({:.1} MB) in {:.1} s",
        entries.len(),
        store.len(),
        path.display(),
        file.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

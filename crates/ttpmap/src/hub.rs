//! Model folders: where `--model` resolves, and fetching a Hugging Face model when missing.
//!
//! Resolution order (the brief's "flags, then environment variables, then a cache folder, then
//! the official source"):
//! 1. `--model X` / `$TTPMAP_MODEL`: an existing folder is used as is. A Hugging Face repo id
//!    (`org/name`, not an existing path) is looked up in the Hugging Face cache
//!    (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`: the snapshot `refs/main`
//!    points to), then in `<cache>/models/org--name`, and downloaded there when missing.
//! 2. No model given: `<cache>/models/all-MiniLM-L6-v2`, downloaded from
//!    `sentence-transformers/all-MiniLM-L6-v2` when missing.
//!
//! Invariant: a model folder in our cache is complete or absent. Files are downloaded into a
//! temporary folder beside it, the folder must open as a model ([`ModelDir::open`]), and only
//! then is it renamed into place. Downloading needs the `hub` feature (default) and no
//! `--offline`; `$HF_ENDPOINT` overrides `https://huggingface.co` (mirrors, tests).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ttpmap_ml::ModelDir;

use crate::assets::Assets;

/// The default sentence encoder, as a Hugging Face repo id.
pub const DEFAULT_MODEL_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Folder name of the default model inside `<cache>/models`.
pub const DEFAULT_MODEL_DIR: &str = "all-MiniLM-L6-v2";
/// Files a model folder needs.
const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// Files fetched when the repo has them (sentence-transformers metadata, vocab).
const OPTIONAL: [&str; 5] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
];

/// Whether `s` looks like a Hugging Face repo id (`org/name`) rather than a path.
pub fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The snapshot folder of `repo` in the Hugging Face cache, when one is complete there.
pub fn hf_cache_snapshot(repo: &str) -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let hub = env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/huggingface/hub")))?;
    let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    let rev = std::fs::read_to_string(repo_dir.join("refs").join("main")).ok()?;
    let snap = repo_dir.join("snapshots").join(rev.trim());
    REQUIRED[..2]
        .iter()
        .all(|f| snap.join(f).is_file())
        .then_some(snap)
}

/// The message for a model path that is a file (`--model DIR/config.json`): it names the
/// file and the folder to pass instead.
pub fn file_not_folder(p: &Path) -> String {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    format!(
        "--model {} is a file, not a model folder: pass the folder containing it ({})",
        p.display(),
        parent.display()
    )
}

/// The model folder for `spec` (`--model` / `$TTPMAP_MODEL`; `None` for the default model:
/// the cache, then `<shared>/models/all-MiniLM-L6-v2` beside the data folder), downloading it
/// when missing and allowed. Errors say what was looked for and how to fix it.
pub fn resolve_model(assets: &Assets, spec: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (repo, dest) = match spec {
        Some(p) if p.is_dir() => return Ok(p.to_path_buf()),
        Some(p) if p.is_file() => bail!("{}", file_not_folder(p)),
        Some(p) => {
            let s = p.to_string_lossy();
            if !is_repo_id(&s) {
                bail!(
                    "model folder {} does not exist (pass a folder with config.json, \
                     tokenizer.json and model.safetensors, or a Hugging Face repo id such as {})",
                    p.display(),
                    DEFAULT_MODEL_REPO
                );
            }
            if let Some(snap) = hf_cache_snapshot(&s) {
                return Ok(snap);
            }
            let dest = assets.cache_dir().join("models").join(s.replace('/', "--"));
            (s.into_owned(), dest)
        }
        None => (
            DEFAULT_MODEL_REPO.to_string(),
            assets.cache_dir().join("models").join(DEFAULT_MODEL_DIR),
        ),
    };
    if dest.join("config.json").is_file() {
        return Ok(dest);
    }
    // The default model also comes from the shared data folder ($TTPMAP_SHARED/models, or
    // ../shared/models beside the data folder) when it is there.
    if spec.is_none() {
        if let Some(shared) = assets.data_dir().parent() {
            let p = shared.join("models").join(DEFAULT_MODEL_DIR);
            if p.join("config.json").is_file() {
                return Ok(p);
            }
        }
    }
    if assets.global.offline {
        bail!(
            "model {repo} is not in {} and --offline forbids downloading it; pass --model DIR \
             (e.g. ../shared/models/all-MiniLM-L6-v2) or set TTPMAP_MODEL",
            dest.display()
        );
    }
    download_model(&repo, &dest, assets.quiet()).with_context(|| {
        format!(
            "model {repo} is not in {} and the download failed; pass --model DIR \
             (e.g. ../shared/models/all-MiniLM-L6-v2) or set TTPMAP_MODEL",
            dest.display()
        )
    })?;
    Ok(dest)
}

/// `$HF_ENDPOINT` or the Hugging Face hub.
#[cfg(feature = "hub")]
fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Downloads `repo`'s model files (revision `main`) into `dest`, atomically (see the module
/// invariant).
#[cfg(feature = "hub")]
pub fn download_model(repo: &str, dest: &Path, quiet: bool) -> anyhow::Result<()> {
    download_model_with(&endpoint(), repo, dest, quiet)
}

/// [`download_model`] from the hub at `endpoint`.
#[cfg(feature = "hub")]
fn download_model_with(endpoint: &str, repo: &str, dest: &Path, quiet: bool) -> anyhow::Result<()> {
    let parent = dest
        .parent()
        .context("the model destination has no parent folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ttpmap-model-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
    let base = format!("{endpoint}/{repo}/resolve/main");
    if !quiet {
        eprintln!("downloading {repo} from {base} into {}", dest.display());
    }
    for file in REQUIRED {
        crate::download::download_to(
            &format!("{base}/{file}"),
            &tmp.path().join(file),
            None,
            quiet,
        )
        .with_context(|| format!("fetching {file} of {repo}"))?;
    }
    for file in OPTIONAL {
        if let Err(e) = crate::download::download_to(
            &format!("{base}/{file}"),
            &tmp.path().join(file),
            None,
            true,
        ) {
            tracing::debug!("{repo} has no {file}: {e:#}");
        }
    }
    ModelDir::open(tmp.path())
        .with_context(|| format!("the files of {repo} are not a usable model"))?;
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, dest) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("moving the model into {}", dest.display()));
    }
    Ok(())
}

/// Without the `hub` feature there is no download.
#[cfg(not(feature = "hub"))]
pub fn download_model(repo: &str, dest: &Path, _quiet: bool) -> anyhow::Result<()> {
    bail!(
        "this ttpmap was built without the `hub` feature, so {repo} cannot be downloaded into {}",
        dest.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::GlobalArgs;

    fn assets(cache: &Path, offline: bool) -> Assets {
        Assets::new(&GlobalArgs {
            attack: None,
            cache_dir: Some(cache.to_path_buf()),
            // Not $TTPMAP_SHARED/data: its models/ folder would answer for the default model.
            data_dir: Some(cache.join("data")),
            offline,
            verbose: 0,
            quiet: true,
        })
    }

    fn shared_model() -> PathBuf {
        crate::test_support::shared_dir().join("models/all-MiniLM-L6-v2")
    }

    #[test]
    fn repo_ids_and_paths() {
        assert!(is_repo_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(is_repo_id("cross-encoder/ms-marco-MiniLM-L-6-v2"));
        for s in [
            "models",
            "./models/x",
            "../x/y",
            "a/b/c",
            "/abs",
            "a b/c",
            "a/",
        ] {
            assert!(!is_repo_id(s), "{s}");
        }
    }

    #[test]
    fn existing_folder_wins_and_offline_misses_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = assets(dir.path(), true);
        let m = shared_model();
        assert_eq!(resolve_model(&a, Some(&m)).unwrap(), m);
        let err = resolve_model(&a, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("--offline") && msg.contains("all-MiniLM-L6-v2"),
            "{msg}"
        );
        let err = resolve_model(&a, Some(Path::new("no/such/dir/here"))).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        // A file inside the model folder: say so, and name the folder to pass.
        let config = m.join("config.json");
        let err = format!("{:#}", resolve_model(&a, Some(&config)).unwrap_err());
        assert!(!err.contains("does not exist"), "{err}");
        assert!(err.contains("is a file"), "{err}");
        assert!(
            err.contains(&format!("pass the folder containing it ({})", m.display())),
            "{err}"
        );
        // A model already in our cache resolves without the network.
        let cached = dir.path().join("models").join(DEFAULT_MODEL_DIR);
        std::fs::create_dir_all(&cached).unwrap();
        std::fs::write(cached.join("config.json"), "{}").unwrap();
        assert_eq!(resolve_model(&a, None).unwrap(), cached);
    }

    /// Serves files from a folder (one request per connection) until `count` requests.
    fn serve_dir(root: PathBuf, count: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..count {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let file = path.rsplit('/').next().unwrap_or("");
                seen.push(path.clone());
                let mut stream = stream;
                match std::fs::read(root.join(file)) {
                    Ok(body) if path.contains("/resolve/main/") => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(&body);
                    }
                    _ => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
                let _ = stream.flush();
            }
            seen
        });
        (format!("http://{addr}"), handle)
    }

    #[cfg(feature = "hub")]
    #[test]
    fn downloads_a_model_folder_atomically_from_the_endpoint() {
        // HF_ENDPOINT is process-wide: this is the only test that sets it.
        let root = shared_model();
        let (url, server) = serve_dir(root.clone(), REQUIRED.len() + OPTIONAL.len());
        std::env::set_var("HF_ENDPOINT", &url);
        let cache = tempfile::tempdir().unwrap();
        let a = assets(cache.path(), false);
        let got = resolve_model(&a, Some(Path::new("acme/tiny-encoder"))).unwrap();
        std::env::remove_var("HF_ENDPOINT");
        assert_eq!(got, cache.path().join("models").join("acme--tiny-encoder"));
        for f in REQUIRED {
            assert_eq!(
                std::fs::read(got.join(f)).unwrap(),
                std::fs::read(root.join(f)).unwrap(),
                "{f}"
            );
        }
        ModelDir::open(&got).unwrap();
        let seen = server.join().unwrap();
        assert!(seen.contains(&"/acme/tiny-encoder/resolve/main/config.json".to_string()));
        // Nothing but the model folder is left in models/.
        let names: Vec<_> = std::fs::read_dir(cache.path().join("models"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(feature = "hub")]
    #[test]
    fn a_failed_download_leaves_no_folder() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("models").join("x--y");
        let err = download_model_with("http://127.0.0.1:9", "x/y", &dest, true).unwrap_err();
        assert!(format!("{err:#}").contains("config.json"), "{err:#}");
        assert!(!dest.exists());
        let left: Vec<_> = std::fs::read_dir(cache.path().join("models"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

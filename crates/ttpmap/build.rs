//! Compiles the shipped default model (`models/default/` at the repository root: the trained
//! delta over all-MiniLM-L6-v2, see `ttpmap_ml::trained`) into the binary, so that `ttpmap
//! extract` uses it on a fresh clone without a training step. Writes
//! `$OUT_DIR/default_model.rs` with one `(name, bytes)` entry per file; the list is empty when
//! the folder is missing (the default method then says so and falls back to BM25). Also
//! compiles in the text embeddings of `models/embeddings/` (`$OUT_DIR/embedding_stores.rs`,
//! see `ttpmap_ml::dense_store`), which the dense index takes instead of encoding ATT&CK's texts.

use std::path::PathBuf;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    embed_folder(
        &manifest_dir.join("../../models/default"),
        &["json", "safetensors"],
        "default_model.rs",
        "The files of `models/default/` at build time (name, bytes).",
    );
    embed_folder(
        &manifest_dir.join("../../models/embeddings"),
        &["ttpemb"],
        "embedding_stores.rs",
        "The embedding stores of `models/embeddings/` at build time (name, bytes).",
    );
}

/// Writes `$OUT_DIR/<out_name>` with `pub const FILES: &[(&str, &[u8])]`, one entry per file of
/// `dir` whose extension is in `extensions` (sorted by name; empty when `dir` is missing).
fn embed_folder(dir: &std::path::Path, extensions: &[&str], out_name: &str, doc: &str) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| extensions.iter().any(|x| e == *x))
            })
            .collect();
        files.sort();
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let name = f
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            let abs = f.canonicalize().expect("listed file exists");
            entries.push(format!(
                "    ({name:?}, include_bytes!({:?})),",
                abs.display().to_string()
            ));
        }
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join(out_name);
    let code = format!(
        "/// {doc}\npub const FILES: &[(&str, &[u8])] = &[\n{}\n];\n",
        entries.join("\n")
    );
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

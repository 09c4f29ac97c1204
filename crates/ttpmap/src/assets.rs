//! Where assets come from: flags, then environment variables, then the cache folder, then a
//! download from the official source (unless offline).
//!
//! The ATT&CK bundle lives at `<cache_dir>/attack/enterprise-attack.json`; the parsed catalog's
//! cache files (keyed by the bundle's sha256) sit beside it in `<cache_dir>/attack/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ttpmap_core::attack::Catalog;

use crate::cli::GlobalArgs;
use crate::download::{self, DownloadReport};

/// File name of the ATT&CK bundle inside `<cache_dir>/attack/`.
pub const ATTACK_FILE: &str = "enterprise-attack.json";

/// Resolved locations of assets for one run.
#[derive(Debug, Clone)]
pub struct Assets {
    pub global: GlobalArgs,
}

impl Assets {
    pub fn new(global: &GlobalArgs) -> Self {
        Assets {
            global: global.clone(),
        }
    }

    /// The review database `ttpmap serve` and `data export-reviews` use without `--db`:
    /// `ttpmap.db` in the cache folder.
    pub fn review_db(&self) -> PathBuf {
        self.cache_dir().join("ttpmap.db")
    }

    /// The cache folder: --cache-dir / $TTPMAP_CACHE, $XDG_CACHE_HOME/ttpmap, ~/.cache/ttpmap.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.global.cache_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("ttpmap");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(h).join(".cache").join("ttpmap");
        }
        PathBuf::from(".ttpmap-cache")
    }

    /// The datasets folder: --data-dir / $TTPMAP_DATA, $TTPMAP_SHARED/data, ../shared/data.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.global.data_dir {
            return d.clone();
        }
        if let Some(s) = std::env::var_os("TTPMAP_SHARED").filter(|v| !v.is_empty()) {
            return PathBuf::from(s).join("data");
        }
        PathBuf::from("../shared/data")
    }

    pub fn quiet(&self) -> bool {
        self.global.quiet
    }

    /// Folder of the ATT&CK bundle and the catalog cache: `<cache_dir>/attack`.
    pub fn attack_dir(&self) -> PathBuf {
        self.cache_dir().join("attack")
    }

    /// The ATT&CK bundle to use: --attack / $TTPMAP_ATTACK, else
    /// `<cache_dir>/attack/enterprise-attack.json`, else the data folder's
    /// `attack/enterprise-attack*.json` (the shared data), else a download of the latest bundle into
    /// that path (an error with --offline or when the download fails).
    pub fn attack_bundle(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.global.attack {
            if !p.is_file() {
                bail!(
                    "ATT&CK bundle {} (from --attack / $TTPMAP_ATTACK) does not exist or is not a file",
                    p.display()
                );
            }
            return Ok(p.clone());
        }
        let cached = self.attack_dir().join(ATTACK_FILE);
        if cached.is_file() {
            return Ok(cached);
        }
        if let Some(shared) = self.shared_bundle() {
            return Ok(shared);
        }
        if self.global.offline {
            bail!(
                "no ATT&CK bundle: {} does not exist and --offline forbids downloading it; \
                 pass --attack FILE (or set TTPMAP_ATTACK), or run `ttpmap attack update` while online",
                cached.display()
            );
        }
        if !self.quiet() {
            eprintln!(
                "ATT&CK bundle not found in {}; downloading {}",
                cached.display(),
                download::ATTACK_URL
            );
        }
        self.update_attack(download::ATTACK_URL, None)
            .with_context(|| {
                format!(
                    "no ATT&CK bundle at {} and the download failed; pass --attack FILE (or set \
                 TTPMAP_ATTACK), or run `ttpmap attack update` when the network is reachable",
                    cached.display()
                )
            })?;
        Ok(cached)
    }

    /// The newest `enterprise-attack*.json` of the data folder's `attack/` (the shared data
    /// folder holds the project's pinned bundle), if any.
    fn shared_bundle(&self) -> Option<PathBuf> {
        let dir = self.data_dir().join("attack");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("enterprise-attack") && n.ends_with(".json"))
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// The ATT&CK catalog of [`Self::attack_bundle`], through the parsed-catalog cache in
    /// `<cache_dir>/attack/`.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let bundle = self.attack_bundle()?;
        Catalog::open_cached(&bundle, Some(&self.attack_dir()))
            .with_context(|| format!("loading the ATT&CK catalog from {}", bundle.display()))
    }

    /// Downloads an ATT&CK bundle from `url` into `<cache_dir>/attack/enterprise-attack.json`.
    /// The download must parse as a catalog before it replaces the current bundle; its parsed
    /// form is stored in the catalog cache. Returns the download report and the catalog.
    pub fn update_attack(
        &self,
        url: &str,
        expected_sha256: Option<&str>,
    ) -> anyhow::Result<(DownloadReport, Catalog)> {
        let dir = self.attack_dir();
        let dest = dir.join(ATTACK_FILE);
        let mut parsed: Option<Catalog> = None;
        let report = download::download_validated(
            url,
            &dest,
            expected_sha256,
            self.quiet(),
            |tmp: &Path| {
                parsed = Some(Catalog::from_path(tmp).context("not a usable ATT&CK bundle")?);
                Ok(())
            },
        )?;
        let Some(parsed) = parsed else {
            bail!("internal error: the downloaded bundle was not validated");
        };
        if let Err(e) = parsed.save_cache(&dir) {
            tracing::warn!("could not write the ATT&CK catalog cache: {e}");
        }
        // Reload from its final place so that `source()` names the real file (a cache hit).
        let catalog = Catalog::open_cached(&dest, Some(&dir))
            .with_context(|| format!("loading the ATT&CK catalog from {}", dest.display()))?;
        Ok((report, catalog))
    }
}

/// Maps a dataset's labels to the catalog's current ids (following revocations), logging what
/// was remapped and warning about labels the catalog does not know (they are dropped).
pub fn remap_labels(ds: &mut ttpmap_core::dataset::Dataset, catalog: &Catalog) {
    let report = ds.remap(|id| catalog.resolve(id).current().cloned());
    if !report.remapped.is_empty() {
        tracing::info!("{} {}: remapped {:?}", ds.name, ds.split, report.remapped);
    }
    if !report.unknown.is_empty() {
        tracing::warn!(
            "{} {}: labels not in ATT&CK {} dropped: {:?}",
            ds.name,
            ds.split,
            catalog.version(),
            report.unknown
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::test_server::serve;

    const BUNDLE: &str = r#"{"type": "bundle", "id": "bundle--t", "objects": [
        {"type": "x-mitre-collection", "id": "x-mitre-collection--1", "x_mitre_version": "42.0"},
        {"type": "attack-pattern", "id": "attack-pattern--1", "name": "PowerShell",
         "external_references": [{"source_name": "mitre-attack", "external_id": "T1059.001"}]}]}"#;

    fn assets(cache: &Path, offline: bool, attack: Option<PathBuf>) -> Assets {
        Assets::new(&GlobalArgs {
            attack,
            cache_dir: Some(cache.to_path_buf()),
            // A data folder without an ATT&CK bundle: the shared one is not found there.
            data_dir: Some(cache.join("data")),
            offline,
            verbose: 0,
            quiet: true,
        })
    }

    #[test]
    fn offline_without_bundle_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = assets(dir.path(), true, None).attack_bundle().unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("--offline")
                && msg.contains("--attack")
                && msg.contains("ttpmap attack update"),
            "{msg}"
        );
        let err = assets(dir.path(), true, Some(dir.path().join("missing.json")))
            .attack_bundle()
            .unwrap_err();
        assert!(format!("{err:#}").contains("missing.json"), "{err:#}");
    }

    #[test]
    fn update_validates_then_serves_from_cache() {
        let dir = tempfile::tempdir().unwrap();
        let a = assets(dir.path(), false, None);
        let (url, h) = serve("200 OK", BUNDLE.len(), BUNDLE.as_bytes().to_vec());
        let (report, catalog) = a.update_attack(&url, None).unwrap();
        h.join().unwrap();
        assert_eq!(report.bytes, BUNDLE.len() as u64);
        assert_eq!(catalog.version(), "42.0");
        assert_eq!(catalog.fingerprint(), report.sha256);
        let bundle = dir.path().join("attack").join(ATTACK_FILE);
        assert_eq!(catalog.source(), bundle.as_path());
        assert!(Catalog::cache_path(&a.attack_dir(), &report.sha256).is_file());

        // Offline now works: the bundle is in the cache folder.
        let offline = assets(dir.path(), true, None);
        assert_eq!(offline.attack_bundle().unwrap(), bundle);
        assert_eq!(
            offline
                .catalog()
                .unwrap()
                .technique(&"T1059.001".parse().unwrap())
                .unwrap()
                .name,
            "PowerShell"
        );

        // JSON that is not a bundle is rejected and the good bundle stays.
        let bad = b"{\"type\": \"identity\"}".to_vec();
        let (url, h) = serve("200 OK", bad.len(), bad);
        let err = a.update_attack(&url, None).unwrap_err();
        h.join().unwrap();
        assert!(format!("{err:#}").contains("not a STIX bundle"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&bundle).unwrap(), BUNDLE);

        // --attack takes precedence over the cache.
        let other = dir.path().join("other.json");
        std::fs::write(&other, BUNDLE).unwrap();
        assert_eq!(
            assets(dir.path(), true, Some(other.clone()))
                .attack_bundle()
                .unwrap(),
            other
        );
    }
}

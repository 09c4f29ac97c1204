//! Where assets come from: flags, then environment variables, then the cache folder, then a
//! download from the official source (unless offline).

use std::path::PathBuf;

use crate::cli::GlobalArgs;

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
}

//! ATT&CK catalog loaded from a STIX 2.0/2.1 bundle (MITRE's `enterprise-attack.json`).
//!
//! Owns: parsing a bundle into techniques, tactics, groups/software/campaigns and procedure
//! examples; resolving old (revoked/deprecated) technique ids; a cached compact form of the
//! parsed catalog; [`clean_description`].
//!
//! Invariants:
//! - [`Catalog::techniques`] holds every `attack-pattern` (revoked and deprecated included),
//!   sorted by id; `technique(id)` prefers an active technique when an id occurs twice.
//! - Every technique and tactic has a valid ATT&CK id (`T1234[.001]`, `TA0001`); a bundle where
//!   one lacks it is rejected with an error naming the file and the object.
//! - [`Catalog::fingerprint`] is the sha256 (hex) of the exact bundle bytes; a cache entry is
//!   only used when its fingerprint and format match, and is written atomically.
//! - Procedure examples are the `uses` relationships from a group, software or campaign to an
//!   active technique that carry a description; descriptions are cleaned.
//! - Loading never panics on input: malformed bundles are [`Error`]s naming the file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::types::TechniqueId;

/// One external reference of a STIX object, as ATT&CK publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalReference {
    pub source_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An ATT&CK technique or sub-technique (`attack-pattern`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Technique {
    pub id: TechniqueId,
    /// STIX id, e.g. `attack-pattern--970a3432-3237-47ad-bcca-7d8cbb217736`.
    pub stix_id: String,
    pub name: String,
    /// Description with markdown links and `(Citation: ...)` markers removed.
    pub description: String,
    /// Kill-chain phase shortnames, e.g. `execution`.
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
    /// Parent technique for a sub-technique.
    pub parent: Option<TechniqueId>,
    /// Active sub-techniques of a technique, sorted.
    pub subtechniques: Vec<TechniqueId>,
    pub revoked: bool,
    pub deprecated: bool,
    /// The technique this one was revoked by (direct target of `revoked-by`).
    pub revoked_by: Option<TechniqueId>,
    /// The ATT&CK page, e.g. `https://attack.mitre.org/techniques/T1059/001`.
    pub url: Option<String>,
    /// ATT&CK's own external references (the `mitre-attack` one first).
    pub external_references: Vec<ExternalReference>,
    /// STIX `created` / `modified` timestamps as published.
    pub created: String,
    pub modified: String,
}

impl Technique {
    /// Active = neither revoked nor deprecated.
    pub fn is_active(&self) -> bool {
        !self.revoked && !self.deprecated
    }
}

/// An ATT&CK tactic (`x-mitre-tactic`), e.g. `TA0002` / `execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tactic {
    /// ATT&CK id, e.g. `TA0002`.
    pub id: String,
    /// Kill-chain phase name used by techniques, e.g. `execution`.
    pub shortname: String,
    pub name: String,
    pub stix_id: String,
    /// Cleaned description (see [`clean_description`]).
    pub description: String,
    pub url: Option<String>,
}

/// What kind of ATT&CK object an [`Entity`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// `intrusion-set` (G....).
    Group,
    /// `malware` (S....).
    Malware,
    /// `tool` (S....).
    Tool,
    /// `campaign` (C....).
    Campaign,
}

impl EntityKind {
    /// Lower-case name: `group`, `malware`, `tool`, `campaign`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Group => "group",
            EntityKind::Malware => "malware",
            EntityKind::Tool => "tool",
            EntityKind::Campaign => "campaign",
        }
    }

    fn from_stix_type(t: &str) -> Option<Self> {
        match t {
            "intrusion-set" => Some(EntityKind::Group),
            "malware" => Some(EntityKind::Malware),
            "tool" => Some(EntityKind::Tool),
            "campaign" => Some(EntityKind::Campaign),
            _ => None,
        }
    }
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group, software (malware or tool) or campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// ATT&CK id, e.g. `G0007`, `S0154`, `C0001`.
    pub id: String,
    pub stix_id: String,
    pub name: String,
    pub kind: EntityKind,
    /// Aliases as published (`aliases` or `x_mitre_aliases`; usually the name comes first).
    pub aliases: Vec<String>,
    /// Cleaned description (see [`clean_description`]).
    pub description: String,
    pub url: Option<String>,
    pub revoked: bool,
    pub deprecated: bool,
    /// ATT&CK id of the entity this one was revoked by, if any.
    pub revoked_by: Option<String>,
}

impl Entity {
    /// Active = neither revoked nor deprecated.
    pub fn is_active(&self) -> bool {
        !self.revoked && !self.deprecated
    }
}

/// A labelled example of a technique in use: one `uses` relationship with its description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcedureExample {
    pub technique: TechniqueId,
    /// ATT&CK id of the group, software or campaign (`G0007`, `S0154`, `C0001`).
    pub source_id: String,
    pub source_name: String,
    pub source_kind: EntityKind,
    /// Cleaned description (see [`clean_description`]).
    pub description: String,
}

/// Where a (possibly old) technique id stands in the loaded catalog.
///
/// Serialises as `{"status": "remapped", "id": "T1086", "current": "T1059.001"}` (`id` is the
/// id the variant holds, or `from`; `current` is [`Resolution::current`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The id is an active technique.
    Current(TechniqueId),
    /// The id was revoked; following `revoked-by` leads to the active technique `to`.
    Remapped { from: TechniqueId, to: TechniqueId },
    /// The id (or the technique its `revoked-by` chain ends at) is deprecated, with no
    /// replacement. Holds the deprecated technique's id.
    Deprecated(TechniqueId),
    /// The id is revoked and its `revoked-by` chain is missing, dangling or cyclic.
    RevokedWithoutReplacement(TechniqueId),
    /// The id is not in the catalog.
    Unknown(TechniqueId),
}

impl Resolution {
    /// A snake-case name of the variant: `current`, `remapped`, `deprecated`,
    /// `revoked_without_replacement`, `unknown`.
    pub fn status(&self) -> &'static str {
        match self {
            Resolution::Current(_) => "current",
            Resolution::Remapped { .. } => "remapped",
            Resolution::Deprecated(_) => "deprecated",
            Resolution::RevokedWithoutReplacement(_) => "revoked_without_replacement",
            Resolution::Unknown(_) => "unknown",
        }
    }

    /// The id the resolution is about (`from` for a remapping).
    pub fn id(&self) -> &TechniqueId {
        match self {
            Resolution::Current(id)
            | Resolution::Deprecated(id)
            | Resolution::RevokedWithoutReplacement(id)
            | Resolution::Unknown(id) => id,
            Resolution::Remapped { from, .. } => from,
        }
    }

    /// The active technique the id stands for today, if any.
    pub fn current(&self) -> Option<&TechniqueId> {
        match self {
            Resolution::Current(id) => Some(id),
            Resolution::Remapped { to, .. } => Some(to),
            _ => None,
        }
    }
}

impl Serialize for Resolution {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("Resolution", 3)?;
        st.serialize_field("status", self.status())?;
        st.serialize_field("id", self.id())?;
        st.serialize_field("current", &self.current())?;
        st.end()
    }
}

/// The parsed content of a catalog; this is what the cache stores.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CatalogData {
    version: String,
    fingerprint: String,
    techniques: Vec<Technique>,
    tactics: Vec<Tactic>,
    groups: Vec<Entity>,
    software: Vec<Entity>,
    campaigns: Vec<Entity>,
    procedures: Vec<ProcedureExample>,
}

/// The ATT&CK catalog: techniques, tactics, groups, software, campaigns, procedure examples.
#[derive(Clone)]
pub struct Catalog {
    data: CatalogData,
    source: PathBuf,
    by_id: HashMap<TechniqueId, usize>,
    by_stix: HashMap<String, usize>,
    entity_by_stix: HashMap<String, (EntityKind, usize)>,
    entity_by_id: HashMap<String, (EntityKind, usize)>,
    tactic_by_short: HashMap<String, usize>,
    procedures_by_technique: HashMap<TechniqueId, Vec<usize>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("source", &self.source)
            .field("version", &self.data.version)
            .field("fingerprint", &self.data.fingerprint)
            .field("techniques", &self.data.techniques.len())
            .field("tactics", &self.data.tactics.len())
            .field("groups", &self.data.groups.len())
            .field("software", &self.data.software.len())
            .field("campaigns", &self.data.campaigns.len())
            .field("procedures", &self.data.procedures.len())
            .finish()
    }
}

/// Version of the cache file layout; bump when [`CatalogData`] or parsing changes.
const CACHE_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    data: CatalogData,
}

impl Catalog {
    /// Reads and parses a STIX bundle.
    pub fn from_path(path: &Path) -> Result<Catalog> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Catalog::from_slice(&bytes, path)
    }

    /// Parses a STIX bundle held in memory; `source` names it in errors and in [`Self::source`].
    pub fn from_slice(bytes: &[u8], source: &Path) -> Result<Catalog> {
        let data = parse_bundle(bytes, source, sha256_hex(bytes))?;
        Ok(Catalog::from_data(data, source))
    }

    /// Like [`Self::from_path`], but reuses a compact parsed form stored in `cache_dir` under
    /// the bundle's sha256. A missing, stale or corrupt cache file is rebuilt; failing to write
    /// the cache is logged and does not fail the load. `None` disables the cache.
    pub fn open_cached(bundle: &Path, cache_dir: Option<&Path>) -> Result<Catalog> {
        let bytes = std::fs::read(bundle).map_err(|e| Error::io(bundle, e))?;
        let fingerprint = sha256_hex(&bytes);
        let Some(dir) = cache_dir else {
            let data = parse_bundle(&bytes, bundle, fingerprint)?;
            return Ok(Catalog::from_data(data, bundle));
        };
        let cache = Catalog::cache_path(dir, &fingerprint);
        match std::fs::read(&cache) {
            Ok(cached) => match serde_json::from_slice::<CacheFile>(&cached) {
                Ok(file) if file.format == CACHE_FORMAT && file.data.fingerprint == fingerprint => {
                    tracing::debug!(cache = %cache.display(), "ATT&CK catalog loaded from cache");
                    return Ok(Catalog::from_data(file.data, bundle));
                }
                Ok(_) => {
                    tracing::debug!(cache = %cache.display(), "stale catalog cache; rebuilding")
                }
                Err(e) => {
                    tracing::warn!(cache = %cache.display(), "corrupt catalog cache ({e}); rebuilding")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(cache = %cache.display(), "cannot read catalog cache ({e}); rebuilding")
            }
        }
        let data = parse_bundle(&bytes, bundle, fingerprint)?;
        let catalog = Catalog::from_data(data, bundle);
        if let Err(e) = catalog.save_cache(dir) {
            tracing::warn!("could not write the ATT&CK catalog cache: {e}");
        }
        Ok(catalog)
    }

    /// Where the cache file of a bundle with this fingerprint lives inside `cache_dir`.
    pub fn cache_path(cache_dir: &Path, fingerprint: &str) -> PathBuf {
        cache_dir.join(format!("catalog-{fingerprint}.v{CACHE_FORMAT}.json"))
    }

    /// Writes the compact form into `cache_dir` (created if missing) atomically: a temporary
    /// file in the same folder, then a rename. Returns the cache file's path.
    pub fn save_cache(&self, cache_dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
        let path = Catalog::cache_path(cache_dir, &self.data.fingerprint);
        let file = CacheFile {
            format: CACHE_FORMAT,
            data: self.data.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| Error::Json {
            path: path.clone(),
            source: e,
        })?;
        write_atomically(&path, &bytes)?;
        Ok(path)
    }

    fn from_data(data: CatalogData, source: &Path) -> Catalog {
        let mut by_id: HashMap<TechniqueId, usize> = HashMap::with_capacity(data.techniques.len());
        let mut by_stix = HashMap::with_capacity(data.techniques.len());
        for (i, t) in data.techniques.iter().enumerate() {
            by_stix.insert(t.stix_id.clone(), i);
            match by_id.get(&t.id) {
                Some(&j) if data.techniques[j].is_active() || !t.is_active() => {}
                _ => {
                    by_id.insert(t.id.clone(), i);
                }
            }
        }
        let mut entity_by_stix = HashMap::new();
        let mut entity_by_id = HashMap::new();
        for list in [&data.groups, &data.software, &data.campaigns] {
            for (i, e) in list.iter().enumerate() {
                entity_by_stix.insert(e.stix_id.clone(), (e.kind, i));
                entity_by_id.entry(e.id.clone()).or_insert((e.kind, i));
            }
        }
        let tactic_by_short = data
            .tactics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.shortname.clone(), i))
            .collect();
        let mut procedures_by_technique: HashMap<TechniqueId, Vec<usize>> = HashMap::new();
        for (i, p) in data.procedures.iter().enumerate() {
            procedures_by_technique
                .entry(p.technique.clone())
                .or_default()
                .push(i);
        }
        Catalog {
            data,
            source: source.to_path_buf(),
            by_id,
            by_stix,
            entity_by_stix,
            entity_by_id,
            tactic_by_short,
            procedures_by_technique,
        }
    }

    /// ATT&CK version, e.g. `18.1` (from the `x-mitre-collection` object, else the bundle id,
    /// else the file name; `unknown` when none says).
    pub fn version(&self) -> &str {
        &self.data.version
    }

    /// sha256 (lower-case hex) of the bundle bytes.
    pub fn fingerprint(&self) -> &str {
        &self.data.fingerprint
    }

    /// The bundle this catalog was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// All techniques and sub-techniques, revoked and deprecated included, sorted by id.
    pub fn techniques(&self) -> &[Technique] {
        &self.data.techniques
    }

    /// Techniques that are neither revoked nor deprecated, sorted by id.
    pub fn active_techniques(&self) -> impl Iterator<Item = &Technique> {
        self.data.techniques.iter().filter(|t| t.is_active())
    }

    /// The technique with this id (the active one when an id occurs twice).
    pub fn technique(&self, id: &TechniqueId) -> Option<&Technique> {
        self.by_id.get(id).map(|&i| &self.data.techniques[i])
    }

    /// The technique with this STIX id (`attack-pattern--...`).
    pub fn technique_by_stix_id(&self, stix_id: &str) -> Option<&Technique> {
        self.by_stix.get(stix_id).map(|&i| &self.data.techniques[i])
    }

    /// Where `id` stands today: current, remapped through `revoked-by`, deprecated, revoked
    /// without replacement, or unknown. Cycles in `revoked-by` end as
    /// [`Resolution::RevokedWithoutReplacement`].
    pub fn resolve(&self, id: &TechniqueId) -> Resolution {
        let Some(start) = self.technique(id) else {
            return Resolution::Unknown(id.clone());
        };
        let mut seen: HashSet<&TechniqueId> = HashSet::new();
        let mut t = start;
        loop {
            if !t.revoked {
                if t.deprecated {
                    return Resolution::Deprecated(t.id.clone());
                }
                return if t.id == start.id {
                    Resolution::Current(t.id.clone())
                } else {
                    Resolution::Remapped {
                        from: start.id.clone(),
                        to: t.id.clone(),
                    }
                };
            }
            if !seen.insert(&t.id) {
                return Resolution::RevokedWithoutReplacement(start.id.clone());
            }
            match t.revoked_by.as_ref().and_then(|next| self.technique(next)) {
                Some(next) => t = next,
                None => return Resolution::RevokedWithoutReplacement(start.id.clone()),
            }
        }
    }

    /// Parses `s` as a technique id and resolves it; a malformed id is an error.
    pub fn resolve_str(&self, s: &str) -> Result<Resolution> {
        Ok(self.resolve(&TechniqueId::parse(s)?))
    }

    /// Tactics in ATT&CK matrix order (tactics missing from the matrix follow, by id).
    pub fn tactics(&self) -> &[Tactic] {
        &self.data.tactics
    }

    /// The tactic with this shortname (kill-chain phase), e.g. `execution`.
    pub fn tactic(&self, shortname: &str) -> Option<&Tactic> {
        self.tactic_by_short
            .get(shortname)
            .map(|&i| &self.data.tactics[i])
    }

    /// All groups (`intrusion-set`), revoked and deprecated included, sorted by id.
    pub fn groups(&self) -> &[Entity] {
        &self.data.groups
    }

    /// All software (`malware` and `tool`), revoked and deprecated included, sorted by id.
    pub fn software(&self) -> &[Entity] {
        &self.data.software
    }

    /// All campaigns, sorted by id.
    pub fn campaigns(&self) -> &[Entity] {
        &self.data.campaigns
    }

    fn entity_at(&self, (kind, i): (EntityKind, usize)) -> Option<&Entity> {
        match kind {
            EntityKind::Group => self.data.groups.get(i),
            EntityKind::Malware | EntityKind::Tool => self.data.software.get(i),
            EntityKind::Campaign => self.data.campaigns.get(i),
        }
    }

    /// The group, software or campaign with this STIX id.
    pub fn entity_by_stix_id(&self, stix_id: &str) -> Option<&Entity> {
        self.entity_by_stix
            .get(stix_id)
            .and_then(|&k| self.entity_at(k))
    }

    /// The group, software or campaign with this ATT&CK id (`G0007`, `S0154`, `C0001`).
    pub fn entity(&self, id: &str) -> Option<&Entity> {
        self.entity_by_id
            .get(id.trim())
            .and_then(|&k| self.entity_at(k))
    }

    /// All procedure examples, sorted by technique, then source id.
    pub fn procedures(&self) -> &[ProcedureExample] {
        &self.data.procedures
    }

    /// Procedure examples of one technique (exact id; sub-techniques are separate).
    pub fn procedures_for(&self, id: &TechniqueId) -> impl Iterator<Item = &ProcedureExample> {
        self.procedures_by_technique
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|&i| &self.data.procedures[i])
    }
}

/// sha256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// readers see either the old or the new content. The temporary file is removed on failure.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Removes STIX/markdown markup from an ATT&CK description: `(Citation: ...)` markers are
/// dropped, markdown links `[text](url)` become `text`, `<code>` tags are removed (their
/// content kept), and all whitespace runs collapse to one space.
pub fn clean_description(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    strip_markup(s, &mut out);
    let mut collapsed = String::with_capacity(out.len());
    for word in out.split_whitespace() {
        if !collapsed.is_empty() {
            collapsed.push(' ');
        }
        collapsed.push_str(word);
    }
    collapsed
}

/// Iterative and linear: bracket pairs are matched once up front (a stack per bracket kind),
/// and a link's text is stripped by continuing the same loop inside it (a stack of where to
/// resume), so neither the nesting depth of `[...](...)` nor a run of unclosed brackets in a
/// hostile bundle costs more than one pass.
fn strip_markup(s: &str, out: &mut String) {
    let squares = bracket_pairs(s, b'[', b']');
    let parens = bracket_pairs(s, b'(', b')');
    // Matching bracket of the one at `i`, if it closes before `hi` (the end of the text being
    // stripped: inside a link text, brackets closing outside it are unclosed).
    let close_of = |pairs: &[usize], i: usize, hi: usize| pairs.get(i).copied().filter(|&c| c < hi);
    // (where to resume, end of the enclosing text) for each link text being stripped.
    let mut resume: Vec<(usize, usize)> = Vec::new();
    let (mut pos, mut hi) = (0usize, s.len());
    loop {
        let rest = &s[pos..hi];
        let Some(off) = rest.find(['(', '[', '<']) else {
            out.push_str(rest);
            match resume.pop() {
                Some((p, h)) => {
                    (pos, hi) = (p, h);
                    continue;
                }
                None => break,
            }
        };
        out.push_str(&rest[..off]);
        let at = pos + off;
        let tail = &s[at..hi];
        if tail.starts_with("(Citation:") {
            if let Some(end) = close_of(&parens, at, hi) {
                pos = end + 1;
                // "text (Citation: x)." -> "text." rather than "text ."
                if s[pos..hi].starts_with(['.', ',', ';', ':', ')']) {
                    let trimmed = out.trim_end().len();
                    out.truncate(trimmed);
                }
                continue;
            }
        } else if tail.starts_with('[') {
            if let Some(close) = close_of(&squares, at, hi) {
                if s[close + 1..hi].starts_with('(') {
                    if let Some(end) = close_of(&parens, close + 1, hi) {
                        resume.push((end + 1, hi));
                        (pos, hi) = (at + 1, close);
                        continue;
                    }
                }
            }
        } else if let Some(r) = tail
            .strip_prefix("<code>")
            .or_else(|| tail.strip_prefix("</code>"))
        {
            pos = hi - r.len();
            continue;
        }
        out.push_str(&tail[..1]);
        pos = at + 1;
    }
}

/// For each byte index holding `open`, the index of the bracket closing it (nesting counted),
/// else `usize::MAX`; one pass with a stack.
fn bracket_pairs(s: &str, open: u8, close: u8) -> Vec<usize> {
    let b = s.as_bytes();
    let mut pairs = vec![usize::MAX; b.len()];
    let mut stack: Vec<usize> = Vec::new();
    for (i, &c) in b.iter().enumerate() {
        if c == open {
            stack.push(i);
        } else if c == close {
            if let Some(o) = stack.pop() {
                pairs[o] = i;
            }
        }
    }
    pairs
}

// ---------------------------------------------------------------------------------------------
// Parsing. Typed views of the STIX objects: only the fields the catalog uses are read; serde
// skips the rest without building a value tree.

#[derive(Deserialize)]
struct RawBundle {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    objects: Option<Vec<RawObject>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawObject {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    created: Option<String>,
    modified: Option<String>,
    revoked: Option<bool>,
    x_mitre_deprecated: Option<bool>,
    external_references: Option<Vec<RawExternalReference>>,
    kill_chain_phases: Option<Vec<RawKillChainPhase>>,
    x_mitre_platforms: Option<Vec<String>>,
    x_mitre_shortname: Option<String>,
    x_mitre_version: Option<String>,
    tactic_refs: Option<Vec<String>>,
    aliases: Option<Vec<String>>,
    x_mitre_aliases: Option<Vec<String>>,
    relationship_type: Option<String>,
    source_ref: Option<String>,
    target_ref: Option<String>,
}

#[derive(Deserialize)]
struct RawExternalReference {
    #[serde(default)]
    source_name: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawKillChainPhase {
    kill_chain_name: String,
    phase_name: String,
}

/// A relationship the catalog needs (`uses`, `subtechnique-of`, `revoked-by`).
struct Relation {
    kind: RelationKind,
    source: String,
    target: String,
    description: Option<String>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum RelationKind {
    Uses,
    SubtechniqueOf,
    RevokedBy,
}

static VERSION_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?:^|[-_ v])(\d{1,3}\.\d{1,3})(?:$|[-_ .])").expect("static regex is valid")
});

/// The ATT&CK version mentioned in a bundle id or file name (`...-v18.1-...`, `...-18.1.json`).
fn version_in(s: &str) -> Option<String> {
    VERSION_RE.captures(s).map(|c| c[1].to_string())
}

fn mitre_reference(refs: &[RawExternalReference]) -> Option<&RawExternalReference> {
    refs.iter().find(|r| {
        r.source_name
            .as_deref()
            .is_some_and(|n| n.starts_with("mitre-") && n.ends_with("attack"))
            && r.external_id.is_some()
    })
}

fn convert_references(refs: Vec<RawExternalReference>) -> Vec<ExternalReference> {
    let mut out: Vec<ExternalReference> = refs
        .into_iter()
        .map(|r| ExternalReference {
            source_name: r.source_name.unwrap_or_default(),
            external_id: r.external_id,
            url: r.url,
            description: r.description,
        })
        .collect();
    // Stable: the mitre-attack reference first, the others in published order.
    out.sort_by_key(|r| r.source_name != "mitre-attack");
    out
}

fn parse_bundle(bytes: &[u8], source: &Path, fingerprint: String) -> Result<CatalogData> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid(
            source,
            "empty file (expected an ATT&CK STIX bundle)",
        ));
    }
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Err(Error::invalid(
            source,
            "binary data, not a JSON STIX bundle",
        ));
    }
    let json_error = |e: serde_json::Error| Error::Json {
        path: source.to_path_buf(),
        source: e,
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // Tell malformed JSON apart from JSON of the wrong shape.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(json_error)?;
        return Err(Error::invalid(
            source,
            "not a STIX bundle (expected a JSON object with \"type\": \"bundle\" and \"objects\")",
        ));
    }
    let bundle: RawBundle = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Error::invalid(source, format!("not a valid STIX bundle: {e}"))
        }
        _ => json_error(e),
    })?;
    if bundle.kind.as_deref() != Some("bundle") {
        return Err(Error::invalid(
            source,
            format!(
                "not a STIX bundle: \"type\" is {} (expected \"bundle\")",
                bundle
                    .kind
                    .as_deref()
                    .map(|k| format!("{k:?}"))
                    .unwrap_or_else(|| "missing".into())
            ),
        ));
    }
    let Some(objects) = bundle.objects else {
        return Err(Error::invalid(
            source,
            "STIX bundle has no \"objects\" array",
        ));
    };

    let mut collection_version: Option<String> = None;
    let mut matrix_tactics: Option<Vec<String>> = None;
    let mut techniques: Vec<Technique> = Vec::new();
    let mut tactics: Vec<Tactic> = Vec::new();
    let mut entities: Vec<Entity> = Vec::new();
    let mut relations: Vec<Relation> = Vec::new();

    for (index, obj) in objects.into_iter().enumerate() {
        let Some(kind) = obj.kind.as_deref() else {
            return Err(Error::invalid(
                source,
                format!("object #{index} has no \"type\""),
            ));
        };
        let Some(stix_id) = obj.id.clone() else {
            return Err(Error::invalid(
                source,
                format!("object #{index} ({kind}) has no \"id\""),
            ));
        };
        let revoked = obj.revoked.unwrap_or(false);
        let deprecated = obj.x_mitre_deprecated.unwrap_or(false);
        match kind {
            "x-mitre-collection" => {
                if collection_version.is_none() {
                    collection_version = obj.x_mitre_version.clone();
                }
            }
            "x-mitre-matrix" => {
                if matrix_tactics.is_none() && !revoked && !deprecated {
                    matrix_tactics = obj.tactic_refs.clone();
                }
            }
            "attack-pattern" => {
                let refs = obj.external_references.unwrap_or_default();
                let Some(mitre) = mitre_reference(&refs) else {
                    return Err(Error::invalid(
                        source,
                        format!("attack-pattern {stix_id} (object #{index}) has no mitre-attack external_id"),
                    ));
                };
                let ext = mitre.external_id.as_deref().unwrap_or_default();
                let id = TechniqueId::parse(ext).map_err(|_| {
                    Error::invalid(
                        source,
                        format!("attack-pattern {stix_id} (object #{index}) has an invalid technique id {ext:?}"),
                    )
                })?;
                let url = mitre.url.clone();
                let mut phases: Vec<String> = Vec::new();
                for p in obj.kill_chain_phases.unwrap_or_default() {
                    if p.kill_chain_name.starts_with("mitre-") && !phases.contains(&p.phase_name) {
                        phases.push(p.phase_name);
                    }
                }
                techniques.push(Technique {
                    id,
                    stix_id,
                    name: obj.name.unwrap_or_default(),
                    description: clean_description(obj.description.as_deref().unwrap_or_default()),
                    tactics: phases,
                    platforms: obj.x_mitre_platforms.unwrap_or_default(),
                    parent: None,
                    subtechniques: Vec::new(),
                    revoked,
                    deprecated,
                    revoked_by: None,
                    url,
                    external_references: convert_references(refs),
                    created: obj.created.unwrap_or_default(),
                    modified: obj.modified.unwrap_or_default(),
                });
            }
            "x-mitre-tactic" => {
                let refs = obj.external_references.unwrap_or_default();
                let Some(mitre) = mitre_reference(&refs) else {
                    return Err(Error::invalid(
                        source,
                        format!("x-mitre-tactic {stix_id} (object #{index}) has no mitre-attack external_id"),
                    ));
                };
                let Some(shortname) = obj.x_mitre_shortname else {
                    return Err(Error::invalid(
                        source,
                        format!(
                            "x-mitre-tactic {stix_id} (object #{index}) has no x_mitre_shortname"
                        ),
                    ));
                };
                if revoked || deprecated {
                    continue;
                }
                tactics.push(Tactic {
                    id: mitre.external_id.clone().unwrap_or_default(),
                    shortname,
                    name: obj.name.unwrap_or_default(),
                    stix_id,
                    description: clean_description(obj.description.as_deref().unwrap_or_default()),
                    url: mitre.url.clone(),
                });
            }
            "relationship" => {
                let rel_kind = match obj.relationship_type.as_deref() {
                    Some("uses") => RelationKind::Uses,
                    Some("subtechnique-of") => RelationKind::SubtechniqueOf,
                    Some("revoked-by") => RelationKind::RevokedBy,
                    _ => continue,
                };
                if revoked || deprecated {
                    continue;
                }
                let (Some(s), Some(t)) = (obj.source_ref, obj.target_ref) else {
                    return Err(Error::invalid(
                        source,
                        format!("relationship {stix_id} (object #{index}) lacks source_ref or target_ref"),
                    ));
                };
                relations.push(Relation {
                    kind: rel_kind,
                    source: s,
                    target: t,
                    description: obj.description,
                });
            }
            other => {
                let Some(entity_kind) = EntityKind::from_stix_type(other) else {
                    continue;
                };
                let refs = obj.external_references.unwrap_or_default();
                // An entity without an ATT&CK id cannot be cited; it is skipped, not fatal.
                let Some(mitre) = mitre_reference(&refs) else {
                    tracing::debug!(
                        "{}: {other} {stix_id} has no mitre-attack external_id; skipped",
                        source.display()
                    );
                    continue;
                };
                let aliases = obj.aliases.or(obj.x_mitre_aliases).unwrap_or_default();
                entities.push(Entity {
                    id: mitre.external_id.clone().unwrap_or_default(),
                    stix_id,
                    name: obj.name.unwrap_or_default(),
                    kind: entity_kind,
                    aliases,
                    description: clean_description(obj.description.as_deref().unwrap_or_default()),
                    url: mitre.url.clone(),
                    revoked,
                    deprecated,
                    revoked_by: None,
                });
            }
        }
    }
    if techniques.is_empty() {
        return Err(Error::invalid(
            source,
            "STIX bundle has no ATT&CK techniques (attack-pattern objects)",
        ));
    }

    // Techniques: sorted by id (active first on a tie), then relationships by index.
    techniques.sort_by(|a, b| a.id.cmp(&b.id).then(b.is_active().cmp(&a.is_active())));
    let tech_index: HashMap<String, usize> = techniques
        .iter()
        .enumerate()
        .map(|(i, t)| (t.stix_id.clone(), i))
        .collect();
    let active_by_id: HashMap<TechniqueId, usize> = techniques
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_active())
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let any_by_id: HashMap<TechniqueId, usize> = techniques
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();

    let entity_ids: HashMap<String, String> = entities
        .iter()
        .map(|e| (e.stix_id.clone(), e.id.clone()))
        .collect();
    for rel in relations
        .iter()
        .filter(|r| r.kind == RelationKind::RevokedBy)
    {
        if let (Some(&s), Some(&t)) = (tech_index.get(&rel.source), tech_index.get(&rel.target)) {
            let to = techniques[t].id.clone();
            techniques[s].revoked_by = Some(to);
        } else if let Some(to) = entity_ids.get(&rel.target).cloned() {
            if let Some(e) = entities.iter_mut().find(|e| e.stix_id == rel.source) {
                e.revoked_by = Some(to);
            }
        }
    }
    for rel in relations
        .iter()
        .filter(|r| r.kind == RelationKind::SubtechniqueOf)
    {
        if let (Some(&s), Some(&t)) = (tech_index.get(&rel.source), tech_index.get(&rel.target)) {
            let parent = techniques[t].id.clone();
            techniques[s].parent = Some(parent);
        }
    }
    // Sub-techniques without a `subtechnique-of` relationship: parent from the id prefix.
    for t in &mut techniques {
        if t.parent.is_none() && t.id.is_subtechnique() {
            let parent = t.id.parent();
            if any_by_id.contains_key(&parent) {
                t.parent = Some(parent);
            }
        }
    }
    // Children lists: active sub-techniques of each (parent) technique.
    let mut children: Vec<(usize, TechniqueId)> = Vec::new();
    for t in techniques.iter().filter(|t| t.is_active()) {
        if let Some(p) = &t.parent {
            if let Some(&pi) = active_by_id.get(p).or_else(|| any_by_id.get(p)) {
                children.push((pi, t.id.clone()));
            }
        }
    }
    for (pi, child) in children {
        techniques[pi].subtechniques.push(child);
    }
    for t in &mut techniques {
        t.subtechniques.sort();
        t.subtechniques.dedup();
    }

    // Tactics in matrix order, the rest by id.
    let order: HashMap<&str, usize> = matrix_tactics
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    tactics.sort_by(|a, b| {
        let ka = order.get(a.stix_id.as_str()).copied().unwrap_or(usize::MAX);
        let kb = order.get(b.stix_id.as_str()).copied().unwrap_or(usize::MAX);
        ka.cmp(&kb).then_with(|| a.id.cmp(&b.id))
    });

    // Procedure examples.
    let entity_by_stix: HashMap<&str, &Entity> =
        entities.iter().map(|e| (e.stix_id.as_str(), e)).collect();
    let mut procedures: Vec<ProcedureExample> = Vec::new();
    for rel in relations.iter().filter(|r| r.kind == RelationKind::Uses) {
        let Some(&ti) = tech_index.get(&rel.target) else {
            continue;
        };
        let technique = &techniques[ti];
        if !technique.is_active() {
            continue;
        }
        let Some(entity) = entity_by_stix.get(rel.source.as_str()) else {
            continue;
        };
        let description = clean_description(rel.description.as_deref().unwrap_or_default());
        if description.is_empty() {
            continue;
        }
        procedures.push(ProcedureExample {
            technique: technique.id.clone(),
            source_id: entity.id.clone(),
            source_name: entity.name.clone(),
            source_kind: entity.kind,
            description,
        });
    }
    procedures.sort_by(|a, b| {
        (&a.technique, &a.source_id, &a.description).cmp(&(
            &b.technique,
            &b.source_id,
            &b.description,
        ))
    });

    let mut groups = Vec::new();
    let mut software = Vec::new();
    let mut campaigns = Vec::new();
    for e in entities {
        match e.kind {
            EntityKind::Group => groups.push(e),
            EntityKind::Malware | EntityKind::Tool => software.push(e),
            EntityKind::Campaign => campaigns.push(e),
        }
    }
    for list in [&mut groups, &mut software, &mut campaigns] {
        list.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.stix_id.cmp(&b.stix_id)));
    }

    let version = collection_version
        .or_else(|| bundle.id.as_deref().and_then(version_in))
        .or_else(|| {
            source
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(version_in)
        })
        .unwrap_or_else(|| "unknown".to_string());

    Ok(CatalogData {
        version,
        fingerprint,
        techniques,
        tactics,
        groups,
        software,
        campaigns,
        procedures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous recursive `strip_markup` (stack depth = link nesting; O(n^2) on runs of
    /// unclosed brackets), kept to check the iterative one against.
    fn strip_markup_recursive(s: &str, out: &mut String) {
        fn matching_close(s: &str, open: u8, close: u8) -> Option<usize> {
            let mut depth = 0usize;
            for (i, &b) in s.as_bytes().iter().enumerate() {
                if b == open {
                    depth += 1;
                } else if b == close {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Some(i);
                    }
                }
            }
            None
        }
        let mut rest = s;
        while let Some(pos) = rest.find(['(', '[', '<']) {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if tail.starts_with("(Citation:") {
                if let Some(end) = matching_close(tail, b'(', b')') {
                    rest = &tail[end + 1..];
                    if rest.starts_with(['.', ',', ';', ':', ')']) {
                        let trimmed = out.trim_end().len();
                        out.truncate(trimmed);
                    }
                    continue;
                }
            } else if tail.starts_with('[') {
                if let Some(close) = matching_close(tail, b'[', b']') {
                    let after = &tail[close + 1..];
                    if after.starts_with('(') {
                        if let Some(end) = matching_close(after, b'(', b')') {
                            strip_markup_recursive(&tail[1..close], out);
                            rest = &after[end + 1..];
                            continue;
                        }
                    }
                }
            } else if let Some(r) = tail
                .strip_prefix("<code>")
                .or_else(|| tail.strip_prefix("</code>"))
            {
                rest = r;
                continue;
            }
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
        out.push_str(rest);
    }

    #[test]
    fn strip_markup_matches_the_recursive_version() {
        let words = [
            "[",
            "]",
            "(",
            ")",
            "(Citation: ",
            "<code>",
            "</code>",
            "a",
            " ",
            ".",
            "[x](y)",
            "é",
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let mut s = String::new();
            for k in 0..len {
                let r = x.rotate_left(k as u32 * 5);
                s.push_str(words[(r % words.len() as u64) as usize]);
            }
            let (mut a, mut b) = (String::new(), String::new());
            strip_markup(&s, &mut a);
            strip_markup_recursive(&s, &mut b);
            assert_eq!(a, b, "{s:?}");
        }
    }

    #[test]
    fn deep_and_unclosed_markup_in_descriptions() {
        let n = 100_000;
        let nested = "[".repeat(n) + "text" + &"](u)".repeat(n);
        let unclosed = "[".repeat(n) + &"(Citation: ".repeat(n);
        let (a, b) = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || (clean_description(&nested), clean_description(&unclosed)))
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        assert_eq!(a, "text");
        assert!(b.starts_with("[[[") && b.len() > 2 * n, "{}", &b[..20]);
    }

    fn tid(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    fn technique(stix: &str, id: &str, name: &str, extra: &str) -> String {
        format!(
            r#"{{"type": "attack-pattern", "id": "{stix}", "name": "{name}",
              "description": "Runs [PowerShell](https://attack.mitre.org/techniques/T1059/001) things.(Citation: X)",
              "created": "2020-01-01T00:00:00Z", "modified": "2021-01-01T00:00:00Z",
              "kill_chain_phases": [{{"kill_chain_name": "mitre-attack", "phase_name": "execution"}}],
              "x_mitre_platforms": ["Windows"],
              "external_references": [{{"source_name": "Ref", "url": "https://example.org"}},
                {{"source_name": "mitre-attack", "external_id": "{id}", "url": "https://attack.mitre.org/techniques/{id}"}}]
              {extra}}}"#
        )
    }

    fn rel(id: &str, kind: &str, s: &str, t: &str, desc: &str) -> String {
        format!(
            r#"{{"type": "relationship", "id": "relationship--{id}", "relationship_type": "{kind}",
              "source_ref": "{s}", "target_ref": "{t}", "description": "{desc}"}}"#
        )
    }

    /// A small bundle covering every resolution case.
    pub(crate) fn synthetic_bundle(collection_version: &str) -> String {
        let objects = [
            format!(r#"{{"type": "x-mitre-collection", "id": "x-mitre-collection--1", "x_mitre_version": "{collection_version}"}}"#),
            r#"{"type": "x-mitre-matrix", "id": "x-mitre-matrix--1", "tactic_refs": ["x-mitre-tactic--b", "x-mitre-tactic--a"]}"#.to_string(),
            r#"{"type": "x-mitre-tactic", "id": "x-mitre-tactic--a", "name": "Execution", "x_mitre_shortname": "execution", "description": "Run code.",
               "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}]}"#.to_string(),
            r#"{"type": "x-mitre-tactic", "id": "x-mitre-tactic--b", "name": "Reconnaissance", "x_mitre_shortname": "reconnaissance",
               "external_references": [{"source_name": "mitre-attack", "external_id": "TA0043"}]}"#.to_string(),
            technique("attack-pattern--1059", "T1059", "Command and Scripting Interpreter", ""),
            technique("attack-pattern--1059-001", "T1059.001", "PowerShell", r#", "x_mitre_is_subtechnique": true"#),
            technique("attack-pattern--1059-003", "T1059.003", "Windows Command Shell", r#", "x_mitre_is_subtechnique": true"#),
            technique("attack-pattern--1086", "T1086", "PowerShell (old)", r#", "revoked": true"#),
            technique("attack-pattern--1001", "T1001", "Loop A", r#", "revoked": true"#),
            technique("attack-pattern--1002", "T1002", "Loop B", r#", "revoked": true"#),
            technique("attack-pattern--1064", "T1064", "Scripting", r#", "x_mitre_deprecated": true"#),
            technique("attack-pattern--1150", "T1150", "Plist", r#", "revoked": true"#),
            technique("attack-pattern--1099", "T1099", "Gone", r#", "revoked": true"#),
            r#"{"type": "intrusion-set", "id": "intrusion-set--1", "name": "APT Test", "aliases": ["APT Test", "Testers"],
               "description": "A [group](https://x.org/(a)).", "external_references": [{"source_name": "mitre-attack", "external_id": "G0001"}]}"#.to_string(),
            r#"{"type": "malware", "id": "malware--1", "name": "Evil", "x_mitre_aliases": ["Evil"],
               "external_references": [{"source_name": "mitre-attack", "external_id": "S0001"}]}"#.to_string(),
            r#"{"type": "course-of-action", "id": "course-of-action--1", "name": "Ignored"}"#.to_string(),
            rel("1", "subtechnique-of", "attack-pattern--1059-001", "attack-pattern--1059", ""),
            rel("2", "revoked-by", "attack-pattern--1086", "attack-pattern--1059-001", ""),
            rel("3", "revoked-by", "attack-pattern--1001", "attack-pattern--1002", ""),
            rel("4", "revoked-by", "attack-pattern--1002", "attack-pattern--1001", ""),
            rel("5", "revoked-by", "attack-pattern--1150", "attack-pattern--1064", ""),
            rel("6", "uses", "intrusion-set--1", "attack-pattern--1059-001", "[APT Test](https://attack.mitre.org/groups/G0001) ran <code>powershell -enc</code> (Citation: A)(Citation: B)."),
            rel("7", "uses", "malware--1", "attack-pattern--1059", "[Evil](https://attack.mitre.org/software/S0001) runs commands."),
            rel("8", "uses", "malware--1", "attack-pattern--1086", "Targets a revoked technique."),
            rel("9", "uses", "malware--1", "attack-pattern--1059-003", ""),
        ];
        format!(
            r#"{{"type": "bundle", "id": "bundle--test", "spec_version": "2.0", "objects": [{}]}}"#,
            objects.join(",\n")
        )
    }

    fn synthetic() -> Catalog {
        Catalog::from_slice(
            synthetic_bundle("9.9").as_bytes(),
            Path::new("synthetic.json"),
        )
        .unwrap()
    }

    #[test]
    fn parses_synthetic_bundle() {
        let c = synthetic();
        assert_eq!(c.version(), "9.9");
        assert_eq!(
            c.fingerprint(),
            sha256_hex(synthetic_bundle("9.9").as_bytes())
        );
        assert_eq!(c.techniques().len(), 9);
        let active: Vec<&str> = c.active_techniques().map(|t| t.id.as_str()).collect();
        assert_eq!(active, ["T1059", "T1059.001", "T1059.003"]);
        let ps = c.technique(&tid("T1059.001")).unwrap();
        assert_eq!(ps.parent, Some(tid("T1059")));
        assert_eq!(ps.tactics, ["execution"]);
        assert_eq!(ps.platforms, ["Windows"]);
        assert_eq!(ps.description, "Runs PowerShell things.");
        assert_eq!(ps.external_references[0].source_name, "mitre-attack");
        assert_eq!(
            ps.url.as_deref(),
            Some("https://attack.mitre.org/techniques/T1059.001")
        );
        // T1059.003 has no subtechnique-of relationship: parent from the id prefix.
        assert_eq!(
            c.technique(&tid("T1059.003")).unwrap().parent,
            Some(tid("T1059"))
        );
        assert_eq!(
            c.technique(&tid("T1059")).unwrap().subtechniques,
            [tid("T1059.001"), tid("T1059.003")]
        );
        assert_eq!(
            c.technique_by_stix_id("attack-pattern--1086").unwrap().id,
            tid("T1086")
        );
        // Matrix order, not id order.
        let tactics: Vec<&str> = c.tactics().iter().map(|t| t.id.as_str()).collect();
        assert_eq!(tactics, ["TA0043", "TA0002"]);
        assert_eq!(c.tactic("execution").unwrap().name, "Execution");
        assert_eq!(c.groups().len(), 1);
        assert_eq!(c.groups()[0].description, "A group.");
        assert_eq!(c.groups()[0].aliases, ["APT Test", "Testers"]);
        assert_eq!(c.software()[0].kind, EntityKind::Malware);
        assert_eq!(c.entity_by_stix_id("malware--1").unwrap().id, "S0001");
        assert_eq!(c.entity("G0001").unwrap().name, "APT Test");
        // Revoked target and empty description are not procedure examples.
        assert_eq!(c.procedures().len(), 2);
        let p: Vec<&ProcedureExample> = c.procedures_for(&tid("T1059.001")).collect();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].source_id, "G0001");
        assert_eq!(p[0].source_kind, EntityKind::Group);
        assert_eq!(p[0].description, "APT Test ran powershell -enc.");
        assert_eq!(c.procedures_for(&tid("T1086")).count(), 0);
    }

    #[test]
    fn resolves_every_case() {
        let c = synthetic();
        assert_eq!(c.resolve(&tid("T1059")), Resolution::Current(tid("T1059")));
        let r = c.resolve(&tid("T1086"));
        assert_eq!(
            r,
            Resolution::Remapped {
                from: tid("T1086"),
                to: tid("T1059.001")
            }
        );
        assert_eq!(r.current(), Some(&tid("T1059.001")));
        assert_eq!(
            c.resolve(&tid("T1064")),
            Resolution::Deprecated(tid("T1064"))
        );
        assert_eq!(
            c.resolve(&tid("T1150")),
            Resolution::Deprecated(tid("T1064"))
        );
        assert_eq!(
            c.resolve(&tid("T1001")),
            Resolution::RevokedWithoutReplacement(tid("T1001"))
        );
        assert_eq!(
            c.resolve(&tid("T1099")),
            Resolution::RevokedWithoutReplacement(tid("T1099"))
        );
        assert_eq!(c.resolve(&tid("T9999")), Resolution::Unknown(tid("T9999")));
        assert_eq!(c.resolve(&tid("T9999")).current(), None);
        assert_eq!(
            c.resolve_str(" t1086 ").unwrap().current(),
            Some(&tid("T1059.001"))
        );
        assert!(matches!(
            c.resolve_str("G0001"),
            Err(Error::InvalidTechniqueId(_))
        ));
    }

    #[test]
    fn cleans_descriptions() {
        let cases = [
            ("plain text", "plain text"),
            (
                "Uses [PowerShell](https://attack.mitre.org/techniques/T1059/001) here.",
                "Uses PowerShell here.",
            ),
            (
                "Done.(Citation: Foo 2020)(Citation: Bar (2021) report)",
                "Done.",
            ),
            ("Some text (Citation: Foo). More", "Some text. More"),
            (
                "Run <code>cmd.exe /c dir</code> now",
                "Run cmd.exe /c dir now",
            ),
            (
                "A [link](https://en.wikipedia.org/wiki/Foo_(bar)) b",
                "A link b",
            ),
            ("[<code>x</code>](u)", "x"),
            ("line one\n\n  line\ttwo  ", "line one line two"),
            (
                "unclosed [bracket and (Citation: never closed",
                "unclosed [bracket and (Citation: never closed",
            ),
            ("[text] not a link (a) <b>", "[text] not a link (a) <b>"),
            ("Ünïcode [ü](x) ok", "Ünïcode ü ok"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(clean_description(input), want, "input {input:?}");
        }
    }

    fn expect_invalid(bytes: &[u8], needle: &str) {
        let err = Catalog::from_slice(bytes, Path::new("bad.json")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("bad.json: "),
            "error must name the file: {msg}"
        );
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }

    #[test]
    fn rejects_malformed_bundles() {
        expect_invalid(b"", "empty file");
        expect_invalid(b"  \n", "empty file");
        expect_invalid(b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary data");
        expect_invalid(b"{\"type\": \"bundle\", \"objects\": [", "malformed JSON");
        expect_invalid(b"not json", "malformed JSON");
        expect_invalid(b"[1, 2, 3]", "not a STIX bundle");
        expect_invalid(
            b"{\"type\": \"identity\", \"objects\": []}",
            "not a STIX bundle: \"type\" is \"identity\"",
        );
        expect_invalid(b"{\"objects\": []}", "\"type\" is missing");
        expect_invalid(b"{\"type\": \"bundle\"}", "no \"objects\" array");
        expect_invalid(
            b"{\"type\": \"bundle\", \"objects\": \"x\"}",
            "not a valid STIX bundle: invalid type: string",
        );
        expect_invalid(
            b"\"just a string\"",
            "not a STIX bundle (expected a JSON object",
        );
        expect_invalid(
            b"{\"type\": \"bundle\", \"objects\": []}",
            "no ATT&CK techniques",
        );
        expect_invalid(
            b"{\"type\": \"bundle\", \"objects\": [{\"id\": \"x\"}]}",
            "object #0 has no \"type\"",
        );
        expect_invalid(
            b"{\"type\": \"bundle\", \"objects\": [{\"type\": \"attack-pattern\"}]}",
            "object #0 (attack-pattern) has no \"id\"",
        );
        expect_invalid(
            b"{\"type\": \"bundle\", \"objects\": [{\"type\": \"attack-pattern\", \"id\": \"attack-pattern--1\"}]}",
            "attack-pattern attack-pattern--1 (object #0) has no mitre-attack external_id",
        );
        expect_invalid(
            br#"{"type": "bundle", "objects": [{"type": "attack-pattern", "id": "attack-pattern--1",
                "external_references": [{"source_name": "mitre-attack", "external_id": "TX1"}]}]}"#,
            "invalid technique id \"TX1\"",
        );
        expect_invalid(
            br#"{"type": "bundle", "objects": [{"type": "x-mitre-tactic", "id": "x-mitre-tactic--1"}]}"#,
            "has no mitre-attack external_id",
        );
        expect_invalid(
            br#"{"type": "bundle", "objects": [{"type": "relationship", "id": "relationship--1", "relationship_type": "uses"}]}"#,
            "lacks source_ref or target_ref",
        );
        expect_invalid(
            br#"{"type": "bundle", "objects": [{"type": "attack-pattern", "id": "a", "name": 5}]}"#,
            "not a valid STIX bundle: invalid type: integer `5`, expected a string at line 1 column",
        );
        let missing =
            Catalog::from_path(Path::new("/nonexistent/enterprise-attack.json")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("/nonexistent/enterprise-attack.json"),
            "{missing}"
        );
    }

    #[test]
    fn version_fallbacks() {
        assert_eq!(
            version_in("bundle--assembled-enterprise-attack-v18.1-from-mitre-cti-421deacb")
                .as_deref(),
            Some("18.1")
        );
        assert_eq!(
            version_in("enterprise-attack-18.1.json").as_deref(),
            Some("18.1")
        );
        assert_eq!(version_in("enterprise-attack.json"), None);
        assert_eq!(version_in("bundle--0f3b0ab1-1234"), None);
        let no_collection = synthetic_bundle("9.9").replace("x-mitre-collection", "x-other");
        let c = Catalog::from_slice(
            no_collection.as_bytes(),
            Path::new("dir/enterprise-attack-15.1.json"),
        )
        .unwrap();
        assert_eq!(c.version(), "15.1");
        let c = Catalog::from_slice(
            no_collection.as_bytes(),
            Path::new("enterprise-attack.json"),
        )
        .unwrap();
        assert_eq!(c.version(), "unknown");
    }

    #[test]
    fn cache_is_used_and_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("enterprise-attack.json");
        let cache_dir = dir.path().join("cache");
        std::fs::write(&bundle, synthetic_bundle("9.9")).unwrap();

        let first = Catalog::open_cached(&bundle, Some(&cache_dir)).unwrap();
        let cache = Catalog::cache_path(&cache_dir, first.fingerprint());
        assert!(cache.is_file(), "the first load writes the cache");
        assert_eq!(first.source(), bundle.as_path());

        // Cached load gives the same catalog.
        let second = Catalog::open_cached(&bundle, Some(&cache_dir)).unwrap();
        assert_eq!(second.techniques(), first.techniques());
        assert_eq!(second.procedures(), first.procedures());
        assert_eq!(second.tactics(), first.tactics());
        assert_eq!(
            second.resolve(&tid("T1086")).current(),
            Some(&tid("T1059.001"))
        );

        // The cache really is read: a cache entry with a changed name is served as is.
        let mut doctored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        doctored["data"]["version"] = serde_json::Value::from("from-cache");
        std::fs::write(&cache, serde_json::to_vec(&doctored).unwrap()).unwrap();
        assert_eq!(
            Catalog::open_cached(&bundle, Some(&cache_dir))
                .unwrap()
                .version(),
            "from-cache"
        );

        // Editing the bundle changes the fingerprint: the new content is parsed.
        std::fs::write(&bundle, synthetic_bundle("10.0")).unwrap();
        let edited = Catalog::open_cached(&bundle, Some(&cache_dir)).unwrap();
        assert_eq!(edited.version(), "10.0");
        assert_ne!(edited.fingerprint(), first.fingerprint());
        assert!(Catalog::cache_path(&cache_dir, edited.fingerprint()).is_file());

        // A corrupt cache file is ignored and rewritten.
        let cache2 = Catalog::cache_path(&cache_dir, edited.fingerprint());
        std::fs::write(&cache2, b"{\"format\": 1, \"data\": {trunc").unwrap();
        let rebuilt = Catalog::open_cached(&bundle, Some(&cache_dir)).unwrap();
        assert_eq!(rebuilt.version(), "10.0");
        let rewritten: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cache2).unwrap()).unwrap();
        assert_eq!(rewritten["format"], CACHE_FORMAT);

        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());

        // An unwritable cache location does not fail the load.
        let blocked = dir.path().join("file-not-dir");
        std::fs::write(&blocked, b"x").unwrap();
        assert_eq!(
            Catalog::open_cached(&bundle, Some(&blocked))
                .unwrap()
                .version(),
            "10.0"
        );
        // No cache at all.
        assert_eq!(
            Catalog::open_cached(&bundle, None).unwrap().version(),
            "10.0"
        );
    }
}

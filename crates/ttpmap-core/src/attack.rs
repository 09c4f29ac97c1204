//! ATT&CK catalog loaded from a STIX 2.0/2.1 bundle.
//!
//! (The loader is being written; the data types below are the stable API.)

use serde::{Deserialize, Serialize};

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
    /// Sub-techniques of a technique, sorted.
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

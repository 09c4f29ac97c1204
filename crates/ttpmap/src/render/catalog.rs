//! Text and JSON views of the ATT&CK catalog for `ttpmap attack info|show`: the catalog
//! summary ([`Info`]) and one technique with its resolution, tactics, sub-techniques,
//! description and procedure examples ([`show`]).

use std::io::Write;

use anyhow::bail;
use serde::Serialize;
use ttpmap_core::attack::{Catalog, EntityKind, ProcedureExample, Resolution, Technique};
use ttpmap_core::{Error, TechniqueId};

/// The catalog summary of `ttpmap attack info`.
#[derive(Serialize)]
pub struct Info {
    version: String,
    source: String,
    fingerprint: String,
    techniques: usize,
    subtechniques: usize,
    revoked: usize,
    deprecated: usize,
    tactics: usize,
    groups: usize,
    malware: usize,
    tools: usize,
    campaigns: usize,
    procedure_examples: usize,
}

impl Info {
    /// Counts of `c`.
    pub fn of(c: &Catalog) -> Info {
        let active: Vec<&Technique> = c.active_techniques().collect();
        let software = |k| c.software().iter().filter(|e| e.kind == k).count();
        Info {
            version: c.version().to_string(),
            source: c.source().display().to_string(),
            fingerprint: c.fingerprint().to_string(),
            techniques: active.iter().filter(|t| !t.id.is_subtechnique()).count(),
            subtechniques: active.iter().filter(|t| t.id.is_subtechnique()).count(),
            revoked: c.techniques().iter().filter(|t| t.revoked).count(),
            deprecated: c
                .techniques()
                .iter()
                .filter(|t| t.deprecated && !t.revoked)
                .count(),
            tactics: c.tactics().len(),
            groups: c.groups().len(),
            malware: software(EntityKind::Malware),
            tools: software(EntityKind::Tool),
            campaigns: c.campaigns().len(),
            procedure_examples: c.procedures().len(),
        }
    }

    /// The summary as aligned text lines.
    pub fn render(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "ATT&CK version      {}", self.version)?;
        writeln!(out, "Bundle              {}", self.source)?;
        writeln!(out, "Fingerprint         sha256:{}", self.fingerprint)?;
        writeln!(
            out,
            "Techniques          {} active ({} techniques, {} sub-techniques); {} revoked, {} deprecated",
            self.techniques + self.subtechniques,
            self.techniques,
            self.subtechniques,
            self.revoked,
            self.deprecated
        )?;
        writeln!(out, "Tactics             {}", self.tactics)?;
        writeln!(out, "Groups              {}", self.groups)?;
        writeln!(
            out,
            "Software            {} ({} malware, {} tools)",
            self.malware + self.tools,
            self.malware,
            self.tools
        )?;
        writeln!(out, "Campaigns           {}", self.campaigns)?;
        writeln!(out, "Procedure examples  {}", self.procedure_examples)
    }
}

#[derive(Serialize)]
struct ShowJson<'a> {
    requested: &'a TechniqueId,
    resolution: &'a Resolution,
    technique: &'a Technique,
    procedure_examples: usize,
    examples: Vec<&'a ProcedureExample>,
}

/// `ttpmap attack show ID`: the technique `id` resolves to (following revocations), as text or
/// JSON, with at most `examples` procedure examples.
pub fn show(
    catalog: &Catalog,
    id: &TechniqueId,
    examples: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let resolution = catalog.resolve(id);
    let shown_id = match &resolution {
        Resolution::Unknown(_) => {
            return Err(Error::UnknownTechnique {
                id: id.to_string(),
                version: catalog.version().to_string(),
            }
            .into());
        }
        Resolution::Current(t) | Resolution::Deprecated(t) => t.clone(),
        Resolution::Remapped { to, .. } => to.clone(),
        Resolution::RevokedWithoutReplacement(t) => t.clone(),
    };
    let Some(technique) = catalog.technique(&shown_id) else {
        bail!("internal error: {shown_id} resolved but is not in the catalog");
    };
    let all: Vec<&ProcedureExample> = catalog.procedures_for(&technique.id).collect();
    if json {
        let doc = ShowJson {
            requested: id,
            resolution: &resolution,
            technique,
            procedure_examples: all.len(),
            examples: all.iter().take(examples).copied().collect(),
        };
        // Serialised first, so that a closed pipe is an io::Error (treated as success by main).
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }

    let name_of = |t: &TechniqueId| {
        catalog
            .technique(t)
            .map(|x| x.name.clone())
            .unwrap_or_default()
    };
    match &resolution {
        Resolution::Remapped { from, to } => {
            writeln!(
                out,
                "{from} was revoked in ATT&CK {}; it now maps to {to} ({}).\n",
                catalog.version(),
                name_of(to)
            )?;
        }
        Resolution::Deprecated(t) if t != id => {
            writeln!(
                out,
                "{id} was revoked by {t}, which is deprecated (no current replacement).\n"
            )?;
        }
        Resolution::Deprecated(_) => {
            writeln!(
                out,
                "{id} is deprecated in ATT&CK {} (no current replacement).\n",
                catalog.version()
            )?;
        }
        Resolution::RevokedWithoutReplacement(_) => {
            writeln!(
                out,
                "{id} is revoked in ATT&CK {} and has no replacement.\n",
                catalog.version()
            )?;
        }
        _ => {}
    }
    writeln!(out, "{}  {}", technique.id, technique.name)?;
    let tactics: Vec<String> = technique
        .tactics
        .iter()
        .map(|s| match catalog.tactic(s) {
            Some(t) => format!("{} ({})", t.name, t.id),
            None => s.clone(),
        })
        .collect();
    writeln!(out, "Tactics         {}", tactics.join(", "))?;
    writeln!(out, "Platforms       {}", technique.platforms.join(", "))?;
    if let Some(p) = &technique.parent {
        writeln!(out, "Parent          {p} {}", name_of(p))?;
    }
    if !technique.subtechniques.is_empty() {
        writeln!(out, "Sub-techniques")?;
        for s in &technique.subtechniques {
            writeln!(out, "  {s}  {}", name_of(s))?;
        }
    }
    if let Some(url) = &technique.url {
        writeln!(out, "URL             {url}")?;
    }
    if technique.revoked || technique.deprecated {
        let status = if technique.revoked {
            "revoked"
        } else {
            "deprecated"
        };
        writeln!(out, "Status          {status}")?;
    }
    writeln!(out)?;
    for line in wrap(&technique.description, 88) {
        writeln!(out, "{line}")?;
    }
    writeln!(out)?;
    let shown = all.len().min(examples);
    writeln!(out, "Procedure examples: {} (showing {shown})", all.len())?;
    for p in all.iter().take(examples) {
        let head = format!("- {} {} ({}): ", p.source_id, p.source_name, p.source_kind);
        let lines = wrap(&format!("{head}{}", p.description), 86);
        for (i, line) in lines.iter().enumerate() {
            let indent = if i == 0 { "" } else { "  " };
            writeln!(out, "{indent}{line}")?;
        }
    }
    Ok(())
}

/// Greedy word wrap at `width` characters (a longer word stays on its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0usize;
    for word in text.split_whitespace() {
        let wlen = word.chars().count();
        if len > 0 && len + 1 + wlen > width {
            lines.push(std::mem::take(&mut line));
            len = 0;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += wlen;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::attack::AttackCommand;

    const BUNDLE: &str = r#"{"type": "bundle", "id": "bundle--t", "objects": [
        {"type": "x-mitre-collection", "id": "x-mitre-collection--1", "x_mitre_version": "42.0"},
        {"type": "x-mitre-tactic", "id": "x-mitre-tactic--1", "name": "Execution", "x_mitre_shortname": "execution",
         "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}]},
        {"type": "attack-pattern", "id": "attack-pattern--1", "name": "PowerShell",
         "description": "Uses [PowerShell](https://x.org).(Citation: A)", "x_mitre_platforms": ["Windows"],
         "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
         "external_references": [{"source_name": "mitre-attack", "external_id": "T1059.001", "url": "https://attack.mitre.org/techniques/T1059/001"}]},
        {"type": "attack-pattern", "id": "attack-pattern--2", "name": "Old PowerShell", "revoked": true,
         "external_references": [{"source_name": "mitre-attack", "external_id": "T1086"}]},
        {"type": "intrusion-set", "id": "intrusion-set--1", "name": "APT Test",
         "external_references": [{"source_name": "mitre-attack", "external_id": "G0001"}]},
        {"type": "relationship", "id": "relationship--1", "relationship_type": "revoked-by",
         "source_ref": "attack-pattern--2", "target_ref": "attack-pattern--1"},
        {"type": "relationship", "id": "relationship--2", "relationship_type": "uses",
         "source_ref": "intrusion-set--1", "target_ref": "attack-pattern--1", "description": "APT Test ran scripts."}]}"#;

    fn catalog() -> Catalog {
        Catalog::from_slice(BUNDLE.as_bytes(), std::path::Path::new("test.json")).unwrap()
    }

    #[test]
    fn show_follows_revoked_ids() {
        let c = catalog();
        let mut out = Vec::new();
        show(&c, &"T1086".parse().unwrap(), 5, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "T1086 was revoked in ATT&CK 42.0; it now maps to T1059.001 (PowerShell)."
            ),
            "{text}"
        );
        assert!(text.contains("T1059.001  PowerShell\nTactics         Execution (TA0002)\nPlatforms       Windows\n"), "{text}");
        assert!(text.contains("\nUses PowerShell.\n"), "{text}");
        assert!(text.contains("Procedure examples: 1 (showing 1)\n- G0001 APT Test (group): APT Test ran scripts."), "{text}");

        let mut out = Vec::new();
        show(&c, &"T1059.001".parse().unwrap(), 0, true, &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["resolution"]["status"], "current");
        assert_eq!(json["procedure_examples"], 1);
        assert_eq!(json["examples"].as_array().unwrap().len(), 0);

        let err = show(&c, &"T9999".parse().unwrap(), 5, false, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown ATT&CK technique T9999 (not in ATT&CK 42.0)"
        );
    }

    #[test]
    fn info_counts() {
        let info = Info::of(&catalog());
        assert_eq!(
            (
                info.techniques,
                info.subtechniques,
                info.revoked,
                info.groups
            ),
            (0, 1, 1, 1)
        );
        let mut out = Vec::new();
        info.render(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("ATT&CK version      42.0\nBundle              test.json\n"),
            "{text}"
        );
        assert!(text.contains("Procedure examples  1"), "{text}");
    }

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("", 10), Vec::<String>::new());
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            ["averyveryverylongword", "x"]
        );
        assert!(wrap(&"word ".repeat(100), 88)
            .iter()
            .all(|l| l.chars().count() <= 88));
    }

    #[test]
    fn cli_parses() {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["ttpmap", "attack", "update", "--version", "18.1"])
                .unwrap();
        let crate::cli::Command::Attack(args) = cli.command else {
            panic!("not attack")
        };
        assert!(
            matches!(args.command, AttackCommand::Update { version: Some(ref v), .. } if v == "18.1")
        );
        let cli =
            crate::cli::Cli::try_parse_from(["ttpmap", "attack", "show", "T1059.001", "--json"])
                .unwrap();
        let crate::cli::Command::Attack(args) = cli.command else {
            panic!("not attack")
        };
        assert!(matches!(
            args.command,
            AttackCommand::Show {
                json: true,
                examples: 5,
                ..
            }
        ));
        assert!(crate::cli::Cli::try_parse_from([
            "ttpmap",
            "attack",
            "update",
            "--url",
            "x",
            "--version",
            "1"
        ])
        .is_err());
    }
}

//! MISP event export: one MISP event per document, as MISP's JSON import reads it
//! (`{"Event": {...}}`; several documents give `{"response": [{"Event": ...}, ...]}`, the shape
//! of MISP's own `restSearch` JSON).
//!
//! An event holds:
//! - `info`: `ttpmap: <title or source>`; `date` / `timestamp` from the clock; unpublished,
//!   analysis "initial", threat level "undefined", distribution "your organisation only";
//! - one `Tag` per technique, the MISP galaxy tag [`galaxy_tag`]:
//!   `misp-galaxy:mitre-attack-pattern="<name> - <id>"` (sub-techniques by their own name,
//!   `"PowerShell - T1059.001"`, as the MISP galaxy names its clusters);
//! - one `text` attribute (category "External analysis", `to_ids` false) per sentence with a
//!   prediction, its text as written, its comment naming the techniques and confidences, and
//!   the techniques' galaxy tags; plus a `link` attribute for a web source.
//!
//! Ids and time follow [`StixOptions`](super::StixOptions)' rules: random UUIDv4s unless
//! `deterministic` (content-derived v4 UUIDs), the current time unless `clock`.

use serde_json::{json, Value};

use super::{doc_label, is_web_url, pretty_json, technique_name, IdMaker};
use super::{Extraction, TechniqueLookup};
use crate::error::{Error, Result};
use crate::types::TechniqueId;

/// Settings of [`misp_events`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MispOptions {
    /// Content-derived UUIDs instead of random ones. Default: false.
    pub deterministic: bool,
    /// A fixed RFC 3339 time for `date` and `timestamp`. Default: `None`, the current time.
    pub clock: Option<String>,
}

/// The MISP galaxy tag of a technique: `misp-galaxy:mitre-attack-pattern="<name> - <id>"`.
pub fn galaxy_tag(name: &str, id: &TechniqueId) -> String {
    // A `"` would end the tag's value early; ATT&CK names have none, but keep the tag whole.
    let name = name.replace('"', "'");
    format!("misp-galaxy:mitre-attack-pattern=\"{name} - {id}\"")
}

/// One MISP event (`{"Event": {...}}`) per extraction (see the module documentation).
pub fn misp_events(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &MispOptions,
) -> Result<Vec<Value>> {
    let now = match &opts.clock {
        Some(c) => chrono::DateTime::parse_from_rfc3339(c.trim())
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| {
                Error::InvalidArgument(format!("MISP clock {c:?} is not an RFC 3339 timestamp"))
            })?,
        None => chrono::Utc::now(),
    };
    let date = now.format("%Y-%m-%d").to_string();
    let timestamp = now.timestamp().to_string();
    let ids = IdMaker {
        deterministic: opts.deterministic,
    };
    let mut events = Vec::with_capacity(extractions.len());
    for (position, x) in extractions.iter().enumerate() {
        let content = serde_json::to_string(x).map_err(super::json_error)?;
        let event_uuid = ids
            .uuid("misp-event", &[&position.to_string(), &content])
            .to_string();
        let name_of = |id: &TechniqueId| -> String {
            x.techniques
                .iter()
                .find(|t| &t.technique == id)
                .map(|dt| technique_name(dt, lookup))
                .filter(|n| !n.is_empty())
                .or_else(|| lookup(id).map(|t| t.name.clone()))
                .unwrap_or_default()
        };
        let tag = |id: &TechniqueId| json!({ "name": galaxy_tag(&name_of(id), id) });
        let mut attributes = Vec::new();
        if is_web_url(&x.source) {
            attributes.push(json!({
                "uuid": ids.uuid("misp-attribute", &[&event_uuid, "source"]).to_string(),
                "type": "link",
                "category": "External analysis",
                "value": x.source.trim(),
                "comment": "The report ttpmap read",
                "to_ids": false,
                "distribution": "5",
                "timestamp": timestamp,
            }));
        }
        for s in &x.sentences {
            let comment: Vec<String> = s
                .predictions
                .iter()
                .map(|p| {
                    format!(
                        "{} {} (confidence {:.2})",
                        p.technique,
                        name_of(&p.technique),
                        p.score
                    )
                })
                .collect();
            attributes.push(json!({
                "uuid": ids
                    .uuid("misp-attribute", &[&event_uuid, &s.sentence.to_string()])
                    .to_string(),
                "type": "text",
                "category": "External analysis",
                "value": s.text,
                "comment": format!("ttpmap, sentence {}: {}", s.sentence, comment.join("; ")),
                "to_ids": false,
                "distribution": "5",
                "timestamp": timestamp,
                "Tag": s.predictions.iter().map(|p| tag(&p.technique)).collect::<Vec<_>>(),
            }));
        }
        let tags: Vec<Value> = x.techniques.iter().map(|dt| tag(&dt.technique)).collect();
        events.push(json!({
            "Event": {
                "uuid": event_uuid,
                "info": format!("ttpmap: {}", doc_label(x)),
                "date": date,
                "timestamp": timestamp,
                "published": false,
                "analysis": "0",
                "threat_level_id": "4",
                "distribution": "0",
                "Tag": tags,
                "Attribute": attributes,
            }
        }));
    }
    Ok(events)
}

/// [`misp_events`] as pretty JSON: `{"Event": ...}` for one document, else
/// `{"response": [{"Event": ...}, ...]}`.
pub fn to_misp_json(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &MispOptions,
) -> Result<String> {
    let mut events = misp_events(extractions, lookup, opts)?;
    if events.len() == 1 {
        pretty_json(&events.remove(0))
    } else {
        pretty_json(&json!({ "response": events }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn galaxy_tags_name_the_technique_then_its_id() {
        let t = |s: &str| TechniqueId::parse(s).unwrap();
        assert_eq!(
            galaxy_tag("PowerShell", &t("T1059.001")),
            r#"misp-galaxy:mitre-attack-pattern="PowerShell - T1059.001""#
        );
        assert_eq!(
            galaxy_tag("Scheduled Task/Job", &t("T1053")),
            r#"misp-galaxy:mitre-attack-pattern="Scheduled Task/Job - T1053""#
        );
        assert_eq!(
            galaxy_tag("A \"quoted\" name", &t("T1003")),
            r#"misp-galaxy:mitre-attack-pattern="A 'quoted' name - T1003""#
        );
    }
}

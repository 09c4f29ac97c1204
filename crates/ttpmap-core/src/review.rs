//! Analyst review of extracted techniques: what a decision is, when one may be recorded, and
//! how the decisions on a report resolve into its reviewed predictions and confirmed labels.
//!
//! Storage is elsewhere (the server's SQLite store); this module is the semantics, on plain
//! values, so the HTTP view, the export and the training-data export agree.
//!
//! Invariants:
//! - decisions are append-only; a list of [`Review`]s is in the order they were recorded, and
//!   the current state of a (sentence, technique) pair is its latest decision ([`latest`]);
//! - `accept` and `reject` apply only to a technique that is predicted on the sentence or was
//!   added there; `add` applies to any technique ([`may_record`]);
//! - an `add` of a revoked id stands for its active replacement; a deprecated technique, or a
//!   revoked one without an active replacement, cannot be added ([`technique_to_add`]);
//! - confirmed labels are the techniques whose latest decision is `accept` or `add`:
//!   predictions nobody reviewed are not labels ([`confirmed_labels`]);
//! - the reviewed predictions of a sentence are its predictions not rejected (accepted or not
//!   yet reviewed) plus the techniques whose latest decision is `add`, with score 1 and
//!   evidence `analyst` ([`reviewed_predictions`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attack::{Catalog, Resolution};
use crate::{Error, Evidence, Prediction, Result, TechniqueId};

/// An analyst's decision on one technique of one sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The predicted technique is right.
    Accept,
    /// The predicted (or earlier added) technique is wrong.
    Reject,
    /// A technique the method missed.
    Add,
}

impl Decision {
    /// `accept`, `reject` or `add` (the stored and serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Reject => "reject",
            Decision::Add => "add",
        }
    }

    /// The inverse of [`Decision::as_str`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "accept" => Some(Decision::Accept),
            "reject" => Some(Decision::Reject),
            "add" => Some(Decision::Add),
            _ => None,
        }
    }

    /// Whether the decision is about a technique already on the sentence (predicted or added):
    /// true for `accept` and `reject`.
    pub fn needs_target(self) -> bool {
        self != Decision::Add
    }
}

/// One recorded review decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    /// The store's id; ids grow in recording order.
    pub id: i64,
    /// Sentence index in the report (from 0).
    pub sentence: i64,
    pub technique: String,
    pub decision: Decision,
    /// Token name, or `anonymous` on an `--open-writes` server.
    pub who: String,
    /// UTC, RFC 3339.
    pub at: String,
}

/// The current decision per (sentence, technique).
pub type Decisions<'a> = BTreeMap<(i64, String), &'a Review>;

/// Whether `decision` may be recorded on a technique that is (`predicted`) or is not predicted
/// on the sentence and was (`added`) or was not added there before.
pub fn may_record(decision: Decision, predicted: bool, added: bool) -> bool {
    !decision.needs_target() || predicted || added
}

/// The current decision per (sentence, technique): the latest one. `reviews` are in recording
/// order, so later ones win.
pub fn latest(reviews: &[Review]) -> Decisions<'_> {
    let mut out = BTreeMap::new();
    for r in reviews {
        out.insert((r.sentence, r.technique.clone()), r);
    }
    out
}

/// The current decisions on sentence `index`, by technique.
pub fn on_sentence<'d, 'r>(
    decisions: &'d Decisions<'r>,
    index: i64,
) -> impl Iterator<Item = (&'d str, &'r Review)> + 'd {
    decisions
        .range((index, String::new())..)
        .take_while(move |((s, _), _)| *s == index)
        .map(|((_, t), r)| (t.as_str(), *r))
}

/// The reviewed labels of each sentence: techniques whose latest decision is accept or add
/// (the analyst confirmed them). Unreviewed predictions are not labels; ids that do not parse
/// are left out.
pub fn confirmed_labels(reviews: &[Review]) -> BTreeMap<i64, Vec<TechniqueId>> {
    let mut out: BTreeMap<i64, Vec<TechniqueId>> = BTreeMap::new();
    for ((s, t), r) in latest(reviews) {
        if r.decision != Decision::Reject {
            if let Ok(id) = TechniqueId::parse(&t) {
                out.entry(s).or_default().push(id);
            }
        }
    }
    out
}

/// The reviewed predictions of sentence `index`: `predicted` without the rejected ones, plus
/// the techniques added there (score 1, evidence `analyst` naming who and when), best first
/// (as [`crate::pipeline::sort_predictions`] orders them).
pub fn reviewed_predictions(
    index: i64,
    predicted: &[Prediction],
    decisions: &Decisions<'_>,
) -> Vec<Prediction> {
    let mut preds: Vec<Prediction> = predicted
        .iter()
        .filter(|p| {
            decisions
                .get(&(index, p.technique.to_string()))
                .is_none_or(|r| r.decision != Decision::Reject)
        })
        .cloned()
        .collect();
    for (t, r) in on_sentence(decisions, index) {
        if r.decision == Decision::Add && !preds.iter().any(|p| p.technique.as_str() == t) {
            if let Ok(id) = TechniqueId::parse(t) {
                preds.push(Prediction {
                    technique: id,
                    score: 1.0,
                    raw_score: 1.0,
                    evidence: Evidence {
                        method: "analyst".into(),
                        reasons: vec![format!("added by {} at {}", r.who, r.at)],
                    },
                });
            }
        }
    }
    crate::pipeline::sort_predictions(&mut preds);
    preds
}

/// The review state of a technique on a sentence, as the review UI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Predicted, not reviewed.
    Predicted,
    /// Predicted and accepted (or added again).
    Accepted,
    /// Rejected (a prediction or an earlier addition).
    Rejected,
    /// Added by an analyst.
    Added,
}

impl Status {
    /// The state of a predicted technique whose current decision is `decision`.
    pub fn of_prediction(decision: Option<Decision>) -> Status {
        match decision {
            None => Status::Predicted,
            Some(Decision::Reject) => Status::Rejected,
            Some(Decision::Accept) | Some(Decision::Add) => Status::Accepted,
        }
    }

    /// The state of a technique not predicted on the sentence whose current decision is
    /// `decision`.
    pub fn of_addition(decision: Decision) -> Status {
        if decision == Decision::Reject {
            Status::Rejected
        } else {
            Status::Added
        }
    }

    /// `predicted`, `accepted`, `rejected` or `added`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Predicted => "predicted",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Added => "added",
        }
    }
}

/// The technique an analyst's `add` of `id` is recorded as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addition {
    /// The active technique stored.
    pub technique: TechniqueId,
    /// The revoked id the analyst gave, when it was remapped.
    pub remapped_from: Option<TechniqueId>,
}

/// The active technique an analyst's `add` of `id` stands for: a revoked id becomes its
/// replacement (with the id it came from). A deprecated technique, a revoked one whose
/// replacement is deprecated or missing, and an id the catalog lacks are refused
/// ([`Error::NotAddable`], [`Error::UnknownTechnique`]).
pub fn technique_to_add(catalog: &Catalog, id: &TechniqueId) -> Result<Addition> {
    let refused = |why| Error::NotAddable {
        id: id.clone(),
        version: catalog.version().to_string(),
        why,
    };
    match catalog.resolve(id) {
        Resolution::Current(technique) => Ok(Addition {
            technique,
            remapped_from: None,
        }),
        Resolution::Remapped { from, to } => Ok(Addition {
            technique: to,
            remapped_from: Some(from),
        }),
        Resolution::Deprecated(d) if &d == id => Err(refused(NotAddable::Deprecated)),
        Resolution::Deprecated(d) => Err(refused(NotAddable::RevokedByDeprecated(d))),
        Resolution::RevokedWithoutReplacement(_) => {
            Err(refused(NotAddable::RevokedWithoutReplacement))
        }
        Resolution::Unknown(_) => Err(Error::UnknownTechnique {
            id: id.to_string(),
            version: catalog.version().to_string(),
        }),
    }
}

/// Why a technique cannot be added (see [`Error::NotAddable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAddable {
    /// The technique is deprecated, with no replacement.
    Deprecated,
    /// The technique was revoked by this one, which is deprecated.
    RevokedByDeprecated(TechniqueId),
    /// The technique is revoked and its `revoked-by` chain is missing, dangling or cyclic.
    RevokedWithoutReplacement,
}

impl NotAddable {
    /// The message of [`Error::NotAddable`] for `id` in ATT&CK `version`.
    pub(crate) fn message(&self, id: &TechniqueId, version: &str) -> String {
        match self {
            NotAddable::Deprecated => format!(
                "{id} is deprecated in ATT&CK {version} and has no replacement; choose another technique"
            ),
            NotAddable::RevokedByDeprecated(d) => format!(
                "{id} was revoked by {d}, which is deprecated in ATT&CK {version} with no \
                 replacement; choose another technique"
            ),
            NotAddable::RevokedWithoutReplacement => format!(
                "{id} is revoked in ATT&CK {version} without a replacement; choose another technique"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(id: i64, sentence: i64, technique: &str, decision: Decision) -> Review {
        Review {
            id,
            sentence,
            technique: technique.into(),
            decision,
            who: "ana".into(),
            at: format!("2026-01-01T00:00:0{id}.000Z"),
        }
    }

    fn pred(t: &str, score: f32) -> Prediction {
        Prediction {
            technique: TechniqueId::parse(t).unwrap(),
            score,
            raw_score: score * 10.0,
            evidence: Evidence {
                method: "bm25".into(),
                reasons: vec![],
            },
        }
    }

    fn tid(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    #[test]
    fn decisions_round_trip_as_lowercase_words() {
        for d in [Decision::Accept, Decision::Reject, Decision::Add] {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert_eq!(Decision::parse("Accept"), None);
        assert!(serde_json::from_str::<Decision>("\"maybe\"").is_err());
    }

    #[test]
    fn accept_and_reject_need_a_technique_on_the_sentence() {
        for d in [Decision::Accept, Decision::Reject] {
            assert!(!may_record(d, false, false));
            assert!(may_record(d, true, false));
            assert!(may_record(d, false, true));
        }
        assert!(may_record(Decision::Add, false, false));
    }

    #[test]
    fn the_latest_decision_wins() {
        let reviews = [
            review(1, 0, "T1059.001", Decision::Reject),
            review(2, 0, "T1059.001", Decision::Accept),
            review(3, 1, "T1059.001", Decision::Accept),
            review(4, 1, "T1059.001", Decision::Reject),
        ];
        let d = latest(&reviews);
        assert_eq!(d.len(), 2);
        assert_eq!(d[&(0, "T1059.001".into())].id, 2);
        assert_eq!(d[&(1, "T1059.001".into())].id, 4);
        let on_1: Vec<_> = on_sentence(&d, 1).map(|(t, r)| (t, r.id)).collect();
        assert_eq!(on_1, [("T1059.001", 4)]);
        assert_eq!(on_sentence(&d, 2).count(), 0);
    }

    #[test]
    fn confirmed_labels_are_accepted_or_added_and_not_later_rejected() {
        let reviews = [
            review(1, 0, "T1059.001", Decision::Accept),
            review(2, 0, "T1003.001", Decision::Add),
            review(3, 0, "T1566.001", Decision::Accept),
            review(4, 0, "T1566.001", Decision::Reject),
            review(5, 2, "T1078", Decision::Reject),
            review(6, 2, "T1078", Decision::Add),
        ];
        let labels = confirmed_labels(&reviews);
        assert_eq!(
            labels,
            BTreeMap::from([
                (0, vec![tid("T1003.001"), tid("T1059.001")]),
                (2, vec![tid("T1078")]),
            ])
        );
        assert!(confirmed_labels(&[]).is_empty());
    }

    #[test]
    fn reviewed_predictions_drop_rejections_and_add_analyst_techniques() {
        let predicted = [pred("T1059.001", 0.8), pred("T1566.001", 0.6)];
        let reviews = [
            review(1, 0, "T1566.001", Decision::Reject),
            review(2, 0, "T1003.001", Decision::Add),
            review(3, 0, "T1078", Decision::Add),
            review(4, 0, "T1078", Decision::Reject),
            review(5, 1, "T1105", Decision::Add),
        ];
        let d = latest(&reviews);
        let got = reviewed_predictions(0, &predicted, &d);
        let ids: Vec<_> = got.iter().map(|p| p.technique.as_str()).collect();
        assert_eq!(ids, ["T1003.001", "T1059.001"]);
        assert_eq!(got[0].score, 1.0);
        assert_eq!(got[0].evidence.method, "analyst");
        assert_eq!(
            got[0].evidence.reasons,
            ["added by ana at 2026-01-01T00:00:02.000Z"]
        );
        // An "add" of a technique already predicted keeps the prediction, once.
        let d = latest(&reviews[..0]);
        assert_eq!(reviewed_predictions(0, &predicted, &d), predicted);
        let again = [review(1, 0, "T1059.001", Decision::Add)];
        let d = latest(&again);
        assert_eq!(reviewed_predictions(0, &predicted, &d), predicted);
    }

    #[test]
    fn statuses() {
        assert_eq!(Status::of_prediction(None).as_str(), "predicted");
        assert_eq!(Status::of_prediction(Some(Decision::Add)), Status::Accepted);
        assert_eq!(
            Status::of_prediction(Some(Decision::Accept)),
            Status::Accepted
        );
        assert_eq!(
            Status::of_prediction(Some(Decision::Reject)),
            Status::Rejected
        );
        assert_eq!(Status::of_addition(Decision::Accept).as_str(), "added");
        assert_eq!(Status::of_addition(Decision::Reject).as_str(), "rejected");
    }

    const BUNDLE: &str = r#"{"type": "bundle", "id": "bundle--review", "objects": [
     {"type": "x-mitre-collection", "id": "x-mitre-collection--1", "x_mitre_version": "42.0", "name": "t"},
     {"type": "attack-pattern", "id": "attack-pattern--1", "name": "PowerShell",
      "external_references": [{"source_name": "mitre-attack", "external_id": "T1059.001"}],
      "x_mitre_is_subtechnique": true},
     {"type": "attack-pattern", "id": "attack-pattern--2", "name": "Old PowerShell", "revoked": true,
      "external_references": [{"source_name": "mitre-attack", "external_id": "T1086"}]},
     {"type": "attack-pattern", "id": "attack-pattern--3", "name": "Gone", "x_mitre_deprecated": true,
      "external_references": [{"source_name": "mitre-attack", "external_id": "T1054"}]},
     {"type": "attack-pattern", "id": "attack-pattern--4", "name": "Revoked to gone", "revoked": true,
      "external_references": [{"source_name": "mitre-attack", "external_id": "T1000"}]},
     {"type": "attack-pattern", "id": "attack-pattern--5", "name": "Dead end", "revoked": true,
      "external_references": [{"source_name": "mitre-attack", "external_id": "T1001"}]},
     {"type": "relationship", "id": "relationship--1", "relationship_type": "revoked-by",
      "source_ref": "attack-pattern--2", "target_ref": "attack-pattern--1"},
     {"type": "relationship", "id": "relationship--2", "relationship_type": "revoked-by",
      "source_ref": "attack-pattern--4", "target_ref": "attack-pattern--3"}
    ]}"#;

    #[test]
    fn an_added_revoked_id_becomes_its_replacement_and_retired_ones_are_refused() {
        let catalog =
            Catalog::from_slice(BUNDLE.as_bytes(), std::path::Path::new("test.json")).unwrap();
        let add = |s: &str| technique_to_add(&catalog, &tid(s));
        assert_eq!(
            add("T1059.001").unwrap(),
            Addition {
                technique: tid("T1059.001"),
                remapped_from: None
            }
        );
        assert_eq!(
            add("T1086").unwrap(),
            Addition {
                technique: tid("T1059.001"),
                remapped_from: Some(tid("T1086"))
            }
        );
        let msg = |s: &str| add(s).unwrap_err().to_string();
        assert_eq!(
            msg("T1054"),
            "T1054 is deprecated in ATT&CK 42.0 and has no replacement; choose another technique"
        );
        assert_eq!(
            msg("T1000"),
            "T1000 was revoked by T1054, which is deprecated in ATT&CK 42.0 with no replacement; \
             choose another technique"
        );
        assert_eq!(
            msg("T1001"),
            "T1001 is revoked in ATT&CK 42.0 without a replacement; choose another technique"
        );
        assert_eq!(
            msg("T1999"),
            "unknown ATT&CK technique T1999 (not in ATT&CK 42.0)"
        );
        assert!(matches!(add("T1054"), Err(Error::NotAddable { .. })));
    }
}

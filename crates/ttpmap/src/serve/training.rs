//! The feedback loop: reviewed reports -> training data (`ttpmap data export-reviews`).
//!
//! A report counts once it has at least one review decision. Every sentence of such a report
//! becomes one training row; its labels are the techniques whose latest decision is `accept`
//! or `add` (a later `reject` removes them; `ttpmap_core::review::confirmed_labels`). Predictions nobody reviewed are not labels, so a
//! sentence whose predictions were left unreviewed is a negative example: review a report
//! completely before exporting it. Documents are named `report-<id>`.
//!
//! Formats (see `ttpmap_core::dataset`):
//! - `tram2` (default): the TRAM2 column JSON that `ttpmap train classifier --dataset FILE`
//!   reads (`{"sentence": {"0": ...}, "labels": {"0": [...]}, "doc_title": {"0": ...}}`);
//! - `jsonl`: one `{"doc_id", "sentence", "labels"}` object per line, read by
//!   `ttpmap_core::dataset::load_sentences_jsonl` (and by `train --dataset FILE.jsonl`).

use ttpmap_core::dataset::{LabeledDocument, LabeledSentence, SentenceRecord};

use super::db::{Db, StoreError};

/// The reviewed reports as labelled documents, oldest report first.
pub fn reviewed_documents(db: &Db) -> Result<Vec<LabeledDocument>, StoreError> {
    let mut docs = Vec::new();
    for id in db.reviewed_report_ids()? {
        let Some(report) = db.get_report(id)? else {
            continue;
        };
        let labels = report.confirmed_labels();
        let doc_id = format!("report-{id}");
        let sentences = report
            .sentences
            .iter()
            .map(|s| LabeledSentence {
                text: s.text.clone(),
                labels: labels.get(&s.index).cloned().unwrap_or_default(),
                doc: doc_id.clone(),
            })
            .collect();
        docs.push(LabeledDocument {
            id: doc_id,
            sentences,
        });
    }
    Ok(docs)
}

/// The JSONL form, one line per sentence.
pub fn to_jsonl(docs: &[LabeledDocument]) -> String {
    let mut out = String::new();
    for s in docs.iter().flat_map(|d| d.sentences.iter()) {
        let r = SentenceRecord {
            doc_id: s.doc.clone(),
            sentence: s.text.clone(),
            labels: s.labels.iter().map(|l| l.to_string()).collect(),
        };
        out.push_str(&serde_json::to_string(&r).unwrap_or_default());
        out.push('\n');
    }
    out
}

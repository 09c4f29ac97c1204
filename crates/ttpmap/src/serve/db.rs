//! The report store: SQLite (bundled), one file, created and migrated on first open.
//!
//! Owns the schema, its migrations (`PRAGMA user_version`) and every read and write of
//! reports, sentences, predictions and review decisions. What decisions mean (which may be
//! recorded, how they resolve into reviewed predictions and confirmed labels) is
//! [`ttpmap_core::review`]; this module stores them and calls it.
//!
//! Invariants:
//! - the database runs in WAL mode with `synchronous = FULL`: a write that returned `Ok` (and
//!   so was acknowledged to a client) survives a crash of the process or the machine;
//! - a report is stored with all its sentences and predictions in one transaction, and every
//!   review decision is one transaction: a reader never sees half of either;
//! - review decisions are append-only: each row keeps who (the token's name, or `anonymous`)
//!   and when (UTC, RFC 3339 with milliseconds); the current state of a (sentence,
//!   technique) pair is its latest decision;
//! - a database with a newer schema than this build knows is refused, never rewritten.
//!
//! Schema (version 2; version 1 had no `sentences.block`):
//! - `reports(id, title, source, text, method, threshold, attack_version, created_at, created_by)`
//! - `sentences(report_id, idx, start, end, text, block)`: every sentence of the document;
//!   `start` and `end` are byte offsets into `reports.text`; `block` is the kind of line
//!   ([`Block::as_str`]: `paragraph`, `heading`, `list_item`, `table_row`, `code`);
//! - `predictions(report_id, sentence, technique, score, raw_score, evidence)`: the kept
//!   predictions (`evidence` is the JSON of [`Evidence`]);
//! - `reviews(id, report_id, sentence, technique, decision, who, at)`: `decision` is `accept`,
//!   `reject` or `add`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use ttpmap_core::review::{self, Decisions};
use ttpmap_core::{Block, Document, Extraction, Prediction, Span, TechniqueId};

pub use ttpmap_core::review::{Decision, Review};

/// Migrations, in order; migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    title TEXT,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    method TEXT NOT NULL,
    threshold REAL NOT NULL,
    attack_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE sentences (
    report_id INTEGER NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (report_id, idx)
) WITHOUT ROWID;
CREATE TABLE predictions (
    report_id INTEGER NOT NULL,
    sentence INTEGER NOT NULL,
    technique TEXT NOT NULL,
    score REAL NOT NULL,
    raw_score REAL NOT NULL,
    evidence TEXT NOT NULL,
    PRIMARY KEY (report_id, sentence, technique),
    FOREIGN KEY (report_id, sentence) REFERENCES sentences(report_id, idx) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id INTEGER NOT NULL,
    sentence INTEGER NOT NULL,
    technique TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'add')),
    who TEXT NOT NULL,
    at TEXT NOT NULL,
    FOREIGN KEY (report_id, sentence) REFERENCES sentences(report_id, idx) ON DELETE CASCADE
);
CREATE INDEX reviews_by_report ON reviews(report_id, sentence, technique, id);
"#,
    // Version 2: the kind of line each sentence is on (reports stored before it read as paragraphs).
    r#"
ALTER TABLE sentences ADD COLUMN block TEXT NOT NULL DEFAULT 'paragraph';
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{}: database schema version {found} is newer than this ttpmap knows ({known}); use a newer ttpmap",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("report {0} does not exist")]
    UnknownReport(i64),
    #[error("report {report} has no sentence {sentence} (it has {count})")]
    UnknownSentence {
        report: i64,
        sentence: i64,
        count: i64,
    },
    #[error("{technique} is not predicted or added on sentence {sentence} of report {report}: use decision \"add\"")]
    NothingToReview {
        report: i64,
        sentence: i64,
        technique: String,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored evidence is not valid JSON: {0}")]
    Evidence(#[from] serde_json::Error),
}

/// One stored sentence with its predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSentence {
    pub index: i64,
    pub span: Span,
    pub text: String,
    pub block: Block,
    pub predictions: Vec<Prediction>,
}

/// A stored report with everything about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredReport {
    pub id: i64,
    pub title: Option<String>,
    pub source: String,
    pub method: String,
    pub threshold: f32,
    pub attack_version: String,
    pub created_at: String,
    pub created_by: String,
    #[serde(skip)]
    pub text: String,
    pub sentences: Vec<StoredSentence>,
    pub reviews: Vec<Review>,
}

/// A line of the report list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportSummary {
    pub id: i64,
    pub title: Option<String>,
    pub source: String,
    pub method: String,
    pub created_at: String,
    pub created_by: String,
    pub sentences: i64,
    pub predictions: i64,
    pub reviews: i64,
}

impl StoredReport {
    /// The current decision per (sentence, technique): the latest one
    /// ([`review::latest`]; reviews are ordered by id).
    pub fn decisions(&self) -> Decisions<'_> {
        review::latest(&self.reviews)
    }

    /// The reviewed labels of each sentence ([`review::confirmed_labels`]).
    pub fn confirmed_labels(&self) -> BTreeMap<i64, Vec<TechniqueId>> {
        review::confirmed_labels(&self.reviews)
    }

    /// The reviewed result as an extraction: each sentence's [`review::reviewed_predictions`],
    /// aggregated to the document as the pipeline does.
    pub fn reviewed_extraction(
        &self,
        lookup: ttpmap_core::pipeline::TechniqueLookup<'_>,
    ) -> Extraction {
        let decisions = self.decisions();
        let mut sentences = Vec::new();
        for s in &self.sentences {
            let preds = review::reviewed_predictions(s.index, &s.predictions, &decisions);
            if preds.is_empty() {
                continue;
            }
            sentences.push(ttpmap_core::SentencePredictions {
                sentence: s.index as usize,
                span: s.span,
                text: s.text.clone(),
                predictions: preds,
            });
        }
        let techniques = ttpmap_core::pipeline::aggregate(&sentences, lookup);
        Extraction {
            source: self.source.clone(),
            title: self.title.clone(),
            method: format!("{} (reviewed)", self.method),
            threshold: self.threshold,
            attack_version: self.attack_version.clone(),
            sentence_count: self.sentences.len(),
            sentences,
            techniques,
        }
    }
}

/// The store: one connection behind a mutex (SQLite serialises writers anyway). Call it from
/// blocking threads, never from the async runtime.
pub struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// Now in UTC, RFC 3339 with milliseconds (`2026-01-01T00:00:00.000Z`).
pub fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Db {
    /// Opens (creating when missing) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") && path != Path::new(":memory:") {
            tracing::warn!("{}: journal mode is {mode}, not WAL", path.display());
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(open_err)?;
            tx.execute_batch(sql).map_err(open_err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(open_err)?;
            tx.commit().map_err(open_err)?;
            tracing::info!("{}: schema migrated to version {}", path.display(), i + 1);
        }
        Ok(Db {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a report, all its sentences and the extraction's predictions; returns its id.
    pub fn insert_report(
        &self,
        doc: &Document,
        x: &Extraction,
        who: &str,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO reports (title, source, text, method, threshold, attack_version, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                doc.title,
                doc.source,
                doc.text,
                x.method,
                x.threshold as f64,
                x.attack_version,
                now_utc(),
                who
            ],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut st = tx.prepare(
                "INSERT INTO sentences (report_id, idx, start, end, text, block) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in &doc.sentences {
                st.execute(params![
                    id,
                    s.index as i64,
                    s.span.start as i64,
                    s.span.end as i64,
                    s.text,
                    s.block.as_str()
                ])?;
            }
            let mut st = tx.prepare(
                "INSERT OR REPLACE INTO predictions (report_id, sentence, technique, score, raw_score, evidence)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in &x.sentences {
                for p in &s.predictions {
                    st.execute(params![
                        id,
                        s.sentence as i64,
                        p.technique.as_str(),
                        p.score as f64,
                        p.raw_score as f64,
                        serde_json::to_string(&p.evidence)?
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(id)
    }

    /// Reports, newest first.
    pub fn list_reports(&self, limit: i64, offset: i64) -> Result<Vec<ReportSummary>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT r.id, r.title, r.source, r.method, r.created_at, r.created_by,
                    (SELECT COUNT(*) FROM sentences s WHERE s.report_id = r.id),
                    (SELECT COUNT(*) FROM predictions p WHERE p.report_id = r.id),
                    (SELECT COUNT(*) FROM reviews v WHERE v.report_id = r.id)
             FROM reports r ORDER BY r.id DESC LIMIT ?1 OFFSET ?2",
        )?;
        let rows = st.query_map(params![limit, offset], |r| {
            Ok(ReportSummary {
                id: r.get(0)?,
                title: r.get(1)?,
                source: r.get(2)?,
                method: r.get(3)?,
                created_at: r.get(4)?,
                created_by: r.get(5)?,
                sentences: r.get(6)?,
                predictions: r.get(7)?,
                reviews: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ids of reports with at least one review decision, oldest first.
    pub fn reviewed_report_ids(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT DISTINCT report_id FROM reviews ORDER BY report_id")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One report with its sentences, predictions and reviews; `None` when unknown.
    pub fn get_report(&self, id: i64) -> Result<Option<StoredReport>, StoreError> {
        let conn = self.conn();
        // One read transaction: a consistent snapshot even while reviews are written.
        let tx = conn.unchecked_transaction()?;
        let head = tx
            .query_row(
                "SELECT id, title, source, text, method, threshold, attack_version, created_at, created_by
                 FROM reports WHERE id = ?1",
                [id],
                |r| {
                    Ok(StoredReport {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        source: r.get(2)?,
                        text: r.get(3)?,
                        method: r.get(4)?,
                        threshold: r.get::<_, f64>(5)? as f32,
                        attack_version: r.get(6)?,
                        created_at: r.get(7)?,
                        created_by: r.get(8)?,
                        sentences: Vec::new(),
                        reviews: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut report) = head else {
            return Ok(None);
        };
        {
            let mut st = tx.prepare(
                "SELECT idx, start, end, text, block FROM sentences WHERE report_id = ?1 ORDER BY idx",
            )?;
            let rows = st.query_map([id], |r| {
                Ok(StoredSentence {
                    index: r.get(0)?,
                    span: Span::new(r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize),
                    text: r.get(3)?,
                    block: Block::from_name(&r.get::<_, String>(4)?),
                    predictions: Vec::new(),
                })
            })?;
            report.sentences = rows.collect::<Result<_, _>>()?;
            let mut st = tx.prepare(
                "SELECT sentence, technique, score, raw_score, evidence FROM predictions
                 WHERE report_id = ?1 ORDER BY sentence, score DESC, technique",
            )?;
            let mut rows = st.query([id])?;
            while let Some(r) = rows.next()? {
                let s: i64 = r.get(0)?;
                let t: String = r.get(1)?;
                let evidence: String = r.get(4)?;
                let Ok(technique) = TechniqueId::parse(&t) else {
                    continue;
                };
                let p = Prediction {
                    technique,
                    score: r.get::<_, f64>(2)? as f32,
                    raw_score: r.get::<_, f64>(3)? as f32,
                    evidence: serde_json::from_str(&evidence)?,
                };
                if let Some(sent) = usize::try_from(s)
                    .ok()
                    .and_then(|i| report.sentences.get_mut(i))
                {
                    sent.predictions.push(p);
                }
            }
            let mut st = tx.prepare(
                "SELECT id, sentence, technique, decision, who, at FROM reviews
                 WHERE report_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([id], |r| {
                let d: String = r.get(3)?;
                Ok(Review {
                    id: r.get(0)?,
                    sentence: r.get(1)?,
                    technique: r.get(2)?,
                    decision: Decision::parse(&d).unwrap_or(Decision::Reject),
                    who: r.get(4)?,
                    at: r.get(5)?,
                })
            })?;
            report.reviews = rows.collect::<Result<_, _>>()?;
        }
        tx.commit()?;
        Ok(Some(report))
    }

    /// Records one review decision in its own transaction, after checking that the report
    /// and sentence exist and, for accept/reject, that the technique is predicted or was
    /// added on that sentence. Returns the stored row.
    pub fn add_review(
        &self,
        report: i64,
        sentence: i64,
        technique: &TechniqueId,
        decision: Decision,
        who: &str,
    ) -> Result<Review, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: Option<i64> = tx
            .query_row("SELECT id FROM reports WHERE id = ?1", [report], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::UnknownReport(report));
        }
        let has_sentence: Option<i64> = tx
            .query_row(
                "SELECT idx FROM sentences WHERE report_id = ?1 AND idx = ?2",
                params![report, sentence],
                |r| r.get(0),
            )
            .optional()?;
        if has_sentence.is_none() {
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM sentences WHERE report_id = ?1",
                [report],
                |r| r.get(0),
            )?;
            return Err(StoreError::UnknownSentence {
                report,
                sentence,
                count,
            });
        }
        if decision.needs_target() {
            let predicted: i64 = tx.query_row(
                "SELECT COUNT(*) FROM predictions WHERE report_id = ?1 AND sentence = ?2 AND technique = ?3",
                params![report, sentence, technique.as_str()],
                |r| r.get(0),
            )?;
            let added: i64 = tx.query_row(
                "SELECT COUNT(*) FROM reviews WHERE report_id = ?1 AND sentence = ?2 AND technique = ?3 AND decision = 'add'",
                params![report, sentence, technique.as_str()],
                |r| r.get(0),
            )?;
            if !review::may_record(decision, predicted > 0, added > 0) {
                return Err(StoreError::NothingToReview {
                    report,
                    sentence,
                    technique: technique.to_string(),
                });
            }
        }
        let at = now_utc();
        tx.execute(
            "INSERT INTO reviews (report_id, sentence, technique, decision, who, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                report,
                sentence,
                technique.as_str(),
                decision.as_str(),
                who,
                at
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Review {
            id,
            sentence,
            technique: technique.to_string(),
            decision,
            who: who.to_string(),
            at,
        })
    }

    /// `PRAGMA integrity_check` (`full`) or `quick_check`: "ok" when the file is intact.
    pub fn integrity_check(&self, full: bool) -> Result<String, StoreError> {
        let sql = if full {
            "PRAGMA integrity_check"
        } else {
            "PRAGMA quick_check"
        };
        Ok(self.conn().query_row(sql, [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by a version-1 build (no `sentences.block`) opens, is migrated, and
    /// its sentences read as paragraphs.
    #[test]
    fn version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1i64).unwrap();
            conn.execute_batch(
                "INSERT INTO reports (id, title, source, text, method, threshold, attack_version, created_at, created_by)
                 VALUES (1, 'Old', 'old.txt', 'Old text.', 'bm25', 0.5, '18.1', '2026-01-01T00:00:00.000Z', 'alice');
                 INSERT INTO sentences (report_id, idx, start, end, text) VALUES (1, 0, 0, 9, 'Old text.');",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let version: i64 = db
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let r = db.get_report(1).unwrap().unwrap();
        assert_eq!(r.sentences[0].text, "Old text.");
        assert_eq!(r.sentences[0].block, Block::Paragraph);
    }
}

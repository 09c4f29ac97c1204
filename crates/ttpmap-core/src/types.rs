//! Shared value types: technique ids, documents and sentences, predictions and evidence.
//!
//! Invariants:
//! - [`TechniqueId`] is always well formed: `T` + 4 digits, optionally `.` + 3 digits.
//! - [`Span`] holds byte offsets into [`Document::text`] (the normalised text);
//!   `&doc.text[s.span.start..s.span.end]` is the sentence, always on `char` boundaries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An ATT&CK technique or sub-technique id, e.g. `T1059` or `T1059.001`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TechniqueId(String);

impl TechniqueId {
    /// Parses and validates an id. Surrounding whitespace is trimmed and a lower-case `t` is
    /// accepted; anything else that is not `T\d{4}(\.\d{3})?` is an error.
    ///
    /// ```
    /// use ttpmap_core::TechniqueId;
    ///
    /// let id = TechniqueId::parse(" t1059.001 ").unwrap();
    /// assert_eq!(id.as_str(), "T1059.001");
    /// assert_eq!(id.parent().as_str(), "T1059");
    /// assert!(TechniqueId::parse("TA0002").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let b = t.as_bytes();
        let ok_main = b.len() >= 5
            && (b[0] == b'T' || b[0] == b't')
            && b[1..5].iter().all(u8::is_ascii_digit);
        let ok = ok_main
            && match b.len() {
                5 => true,
                9 => b[5] == b'.' && b[6..9].iter().all(u8::is_ascii_digit),
                _ => false,
            };
        if ok {
            Ok(TechniqueId(t.to_ascii_uppercase()))
        } else {
            Err(Error::InvalidTechniqueId(s.to_string()))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a sub-technique (`T1059.001`).
    pub fn is_subtechnique(&self) -> bool {
        self.0.len() == 9
    }

    /// The parent technique id (`T1059` for `T1059.001`); a technique is its own parent.
    pub fn parent(&self) -> TechniqueId {
        TechniqueId(self.0[..5].to_string())
    }
}

impl FromStr for TechniqueId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TechniqueId::parse(s)
    }
}

impl TryFrom<String> for TechniqueId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TechniqueId::parse(&s)
    }
}

impl From<TechniqueId> for String {
    fn from(t: TechniqueId) -> String {
        t.0
    }
}

impl fmt::Display for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TechniqueId({})", self.0)
    }
}

/// A half-open byte range `[start, end)` into a document's normalised text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The kind of block (line of [`Document::text`]) a sentence belongs to, as the converter saw
/// it: a Markdown `#` line or HTML `<h2>` is a heading, a `- item` or `<li>` a list item, a
/// `| a | b |` or `<tr>` a table row, a fenced block or `<pre>` line code. Plain text and PDF
/// only know list items and table rows (by their look); everything else is a paragraph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    #[default]
    Paragraph,
    Heading,
    ListItem,
    TableRow,
    Code,
}

impl Block {
    /// `paragraph`, `heading`, `list_item`, `table_row` or `code` (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Block::Paragraph => "paragraph",
            Block::Heading => "heading",
            Block::ListItem => "list_item",
            Block::TableRow => "table_row",
            Block::Code => "code",
        }
    }

    /// The inverse of [`Block::as_str`]; anything else is a paragraph.
    pub fn from_name(s: &str) -> Block {
        match s {
            "heading" => Block::Heading,
            "list_item" => Block::ListItem,
            "table_row" => Block::TableRow,
            "code" => Block::Code,
            _ => Block::Paragraph,
        }
    }

    /// True for [`Block::Paragraph`] (the default, left out of serialised sentences).
    pub fn is_paragraph(&self) -> bool {
        *self == Block::Paragraph
    }
}

/// One sentence (or list item / table row) of a document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sentence {
    /// Position in the document, from 0.
    pub index: usize,
    /// Byte span into [`Document::text`].
    pub span: Span,
    /// The sentence text, equal to `&doc.text[span.start..span.end]`.
    pub text: String,
    /// The kind of line the sentence is on (all sentences of one line share it).
    #[serde(default, skip_serializing_if = "Block::is_paragraph")]
    pub block: Block,
}

/// A normalised document split into sentences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Where it came from: a file path, a URL, or a caller-chosen name.
    pub source: String,
    /// A title when the input had one (HTML `<title>`, first Markdown heading, PDF metadata).
    pub title: Option<String>,
    /// Normalised text; sentence spans index into it.
    pub text: String,
    pub sentences: Vec<Sentence>,
    /// What ingestion recovered from or skipped (a page that could not be read, nesting
    /// flattened past a depth cap, ...), for the caller to show; empty for clean input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a technique was predicted for a sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The method that produced the score (`bm25`, `dense`, `classifier`, `rerank`, `hybrid`).
    pub method: String,
    /// Terms, neighbour examples or other human-readable reasons, best first.
    pub reasons: Vec<String>,
}

/// A technique scored for one sentence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub technique: TechniqueId,
    /// Confidence in [0, 1] (a probability for trained models; a normalised score otherwise).
    pub score: f32,
    /// Raw method score before normalisation (e.g. BM25 score), for explanations.
    pub raw_score: f32,
    pub evidence: Evidence,
}

/// The predictions kept for one sentence (above the threshold), best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentencePredictions {
    pub sentence: usize,
    pub span: Span,
    pub text: String,
    pub predictions: Vec<Prediction>,
}

/// A technique in the document-level summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentTechnique {
    pub technique: TechniqueId,
    pub name: String,
    /// Tactic shortnames (kill-chain phases), e.g. `execution`.
    pub tactics: Vec<String>,
    /// Highest sentence score for this technique.
    pub score: f32,
    /// Indices of the sentences that support it, best first.
    pub sentences: Vec<usize>,
}

/// The result of extracting techniques from one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// Source of the document (path, URL or name).
    pub source: String,
    pub title: Option<String>,
    /// Method name and its settings, e.g. `bm25` with threshold.
    pub method: String,
    pub threshold: f32,
    /// ATT&CK version of the catalog used (e.g. `18.1`).
    pub attack_version: String,
    /// Number of sentences in the document.
    pub sentence_count: usize,
    /// Only sentences with at least one prediction, in document order.
    pub sentences: Vec<SentencePredictions>,
    /// Document-level technique set, best score first.
    pub techniques: Vec<DocumentTechnique>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_id_parsing() {
        assert_eq!(TechniqueId::parse("T1059").unwrap().as_str(), "T1059");
        assert_eq!(
            TechniqueId::parse(" t1059.001 ").unwrap().as_str(),
            "T1059.001"
        );
        for bad in [
            "",
            "T105",
            "T10599",
            "T1059.01",
            "T1059.0011",
            "S0001",
            "TA0001",
            "T1059-001",
        ] {
            assert!(TechniqueId::parse(bad).is_err(), "{bad} must be rejected");
        }
        let sub = TechniqueId::parse("T1059.001").unwrap();
        assert!(sub.is_subtechnique());
        assert_eq!(sub.parent().as_str(), "T1059");
        assert_eq!(sub.parent().parent().as_str(), "T1059");
    }

    #[test]
    fn technique_id_serde_validates() {
        let ok: TechniqueId = serde_json::from_str("\"T1566.001\"").unwrap();
        assert_eq!(ok.to_string(), "T1566.001");
        assert!(serde_json::from_str::<TechniqueId>("\"G0007\"").is_err());
    }
}

//! Tokenisation for BERT-style encoders: a Hugging Face `tokenizer.json` (or a WordPiece
//! `vocab.txt`, built into the equivalent of `BertTokenizer`), truncation, sentence pairs and
//! batches padded to their longest member.
//!
//! Invariants:
//! - Every encoding has at most `max_length` tokens including the special tokens; longer inputs
//!   are truncated (longest-first for pairs) and a `tracing::warn!` says so.
//! - Padding, if the tokenizer file configures any, is disabled: [`TextTokenizer::batch`] pads
//!   with `pad_id` only up to the longest member of the batch; `attention_mask` is 1 on real
//!   tokens and 0 on padding.
//! - An empty sentence encodes to `[CLS] [SEP]`.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{decoders::wordpiece::WordPiece as WordPieceDecoder, Tokenizer};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{Error, Result};

/// Default maximum length (tokens, special tokens included) for single sentences.
pub const DEFAULT_MAX_LENGTH: usize = 256;

/// Token ids of one input (a sentence or a pair), before padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids: 0 for the first text (and its `[CLS]`/`[SEP]`), 1 for the second of a pair.
    pub type_ids: Vec<u32>,
    /// Whether the input was truncated to fit.
    pub truncated: bool,
}

/// A padded batch as tensors, `[batch, longest]`, all u32.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, padded with the pad id.
    pub input_ids: Tensor,
    /// Segment ids, padded with 0.
    pub token_type_ids: Tensor,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// Unpadded length of each member.
    pub lengths: Vec<usize>,
}

/// A tokenizer with the project's truncation and padding rules.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

fn tok_err(path: Option<&Path>) -> impl FnOnce(tokenizers::Error) -> Error + '_ {
    move |source| Error::Tokenizer {
        path: path.map(Path::to_path_buf),
        source,
    }
}

impl TextTokenizer {
    /// Wraps `inner`, truncating to `max_length` tokens (at least 2, for `[CLS] [SEP]`) and
    /// padding with `pad_id`. Padding configured in `inner` is removed.
    pub fn new(mut inner: Tokenizer, max_length: usize, pad_id: u32) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::InvalidArgument(format!(
                "max_length {max_length} leaves no room for [CLS] and [SEP]"
            )));
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(tok_err(None))?;
        Ok(Self {
            inner,
            max_length,
            pad_id,
        })
    }

    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path, max_length: usize, pad_id: u32) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(tok_err(Some(path)))?;
        Self::new(inner, max_length, pad_id)
    }

    /// Builds the equivalent of Hugging Face's `BertTokenizer` from a WordPiece `vocab.txt`:
    /// BERT normalizer (clean text, CJK characters split, accents stripped when lowercasing),
    /// BERT pre-tokenizer, WordPiece with `[UNK]` and `##` continuation, `[CLS] ... [SEP]`
    /// post-processing. The pad id is the `[PAD]` token's.
    pub fn from_vocab(path: &Path, lowercase: bool, max_length: usize) -> Result<Self> {
        let path_str = path.to_str().ok_or_else(|| {
            Error::InvalidArgument(format!("vocabulary path {} is not UTF-8", path.display()))
        })?;
        let model = WordPiece::from_file(path_str)
            .unk_token("[UNK]".to_string())
            .build()
            .map_err(tok_err(Some(path)))?;
        let mut inner = Tokenizer::new(model);
        let id = |tok: &str| {
            inner.token_to_id(tok).ok_or_else(|| {
                Error::InvalidArgument(format!("vocabulary {} has no {tok} token", path.display()))
            })
        };
        let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .map_err(tok_err(Some(path)))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".to_string(), sep),
            ("[CLS]".to_string(), cls),
        )));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        Self::new(inner, max_length, pad)
    }

    /// The wrapped Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Maximum tokens per input, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn finish(
        &self,
        enc: tokenizers::Encoding,
        warn: bool,
        what: impl FnOnce() -> String,
    ) -> Encoded {
        let truncated = !enc.get_overflowing().is_empty();
        if truncated && warn {
            tracing::warn!(
                max_length = self.max_length,
                "input truncated to {} tokens: {}",
                self.max_length,
                what()
            );
        }
        Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated,
        }
    }

    /// Encodes one text with special tokens.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        self.encode_inner(text, true)
    }

    /// Whether `text` fits in `max_length` tokens with its special tokens (encoding it would
    /// truncate nothing).
    pub fn fits(&self, text: &str) -> Result<bool> {
        Ok(!self.encode_inner(text, false)?.truncated)
    }

    fn encode_inner(&self, text: &str, warn: bool) -> Result<Encoded> {
        let enc = self.inner.encode(text, true).map_err(tok_err(None))?;
        Ok(self.finish(enc, warn, || preview(text)))
    }

    /// Encodes a pair (`[CLS] a [SEP] b [SEP]`, type ids 0 then 1), truncating the longer text
    /// first when needed.
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Encoded> {
        self.encode_pair_inner(a, b, true)
    }

    fn encode_pair_inner(&self, a: &str, b: &str, warn: bool) -> Result<Encoded> {
        let enc = self.inner.encode((a, b), true).map_err(tok_err(None))?;
        Ok(self.finish(enc, warn, || {
            format!("pair {} / {}", preview(a), preview(b))
        }))
    }

    /// Encodes many texts; truncations are reported once, as a count (one warning per text
    /// would flood the log when a whole dataset is encoded).
    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        let out = texts
            .iter()
            .map(|t| self.encode_inner(t, false))
            .collect::<Result<Vec<_>>>()?;
        self.warn_truncated(&out);
        Ok(out)
    }

    fn warn_truncated(&self, encoded: &[Encoded]) {
        let n = encoded.iter().filter(|e| e.truncated).count();
        if n > 0 {
            tracing::warn!(
                max_length = self.max_length,
                "{n} of {} inputs truncated to {} tokens",
                encoded.len(),
                self.max_length
            );
        }
    }

    /// Tokenises `texts` and pads them into one batch.
    pub fn batch(&self, texts: &[&str], device: &Device) -> Result<Batch> {
        let enc = self.encode_all(texts)?;
        self.pad(&enc, device)
    }

    /// Tokenises sentence pairs (cross-encoder input) and pads them into one batch.
    pub fn batch_pairs(&self, pairs: &[(&str, &str)], device: &Device) -> Result<Batch> {
        let enc = pairs
            .iter()
            .map(|(a, b)| self.encode_pair_inner(a, b, false))
            .collect::<Result<Vec<_>>>()?;
        self.warn_truncated(&enc);
        self.pad(&enc, device)
    }

    /// Pads encodings to the longest one and builds the tensors. An empty slice is an error.
    pub fn pad(&self, encodings: &[Encoded], device: &Device) -> Result<Batch> {
        pad_batch(encodings, self.pad_id, device)
    }
}

/// Pads `encodings` with `pad_id` to the longest member: `[batch, longest]` u32 tensors.
pub fn pad_batch(encodings: &[Encoded], pad_id: u32, device: &Device) -> Result<Batch> {
    let longest = encodings.iter().map(|e| e.ids.len()).max().ok_or_else(|| {
        Error::InvalidArgument("cannot build a batch from zero inputs".to_string())
    })?;
    let n = encodings.len();
    let mut ids = Vec::with_capacity(n * longest);
    let mut types = Vec::with_capacity(n * longest);
    let mut mask = Vec::with_capacity(n * longest);
    let mut lengths = Vec::with_capacity(n);
    for e in encodings {
        let len = e.ids.len();
        lengths.push(len);
        ids.extend_from_slice(&e.ids);
        ids.extend(std::iter::repeat_n(pad_id, longest - len));
        types.extend(e.type_ids.iter().copied().take(len));
        types.extend(std::iter::repeat_n(0, longest - e.type_ids.len().min(len)));
        mask.extend(std::iter::repeat_n(1u32, len));
        mask.extend(std::iter::repeat_n(0u32, longest - len));
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (n, longest), device)?,
        token_type_ids: Tensor::from_vec(types, (n, longest), device)?,
        attention_mask: Tensor::from_vec(mask, (n, longest), device)?,
        lengths,
    })
}

/// The first characters of a text, for log messages.
fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(60).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn vocab_tokenizer(max_length: usize) -> (tempfile::TempDir, TextTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        let mut f = std::fs::File::create(&path).unwrap();
        for tok in [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "on", "mat",
            ".", "東", "京",
        ] {
            writeln!(f, "{tok}").unwrap();
        }
        drop(f);
        let t = TextTokenizer::from_vocab(&path, true, max_length).unwrap();
        (dir, t)
    }

    #[test]
    fn wordpiece_from_vocab_matches_bert_rules() {
        let (_d, t) = vocab_tokenizer(32);
        let e = t.encode("The cats sat.").unwrap();
        assert_eq!(e.ids, vec![2, 5, 6, 8, 7, 11, 3]);
        assert!(!e.truncated);
        assert_eq!(t.encode("").unwrap().ids, vec![2, 3]);
        // CJK characters are split one per token; unknown words become [UNK].
        assert_eq!(t.encode("東京 zebra").unwrap().ids, vec![2, 12, 13, 1, 3]);
        assert_eq!(t.pad_id(), 0);
    }

    #[test]
    fn truncates_and_pads_to_longest() {
        let (_d, t) = vocab_tokenizer(5);
        let e = t.encode("the cat sat on the mat").unwrap();
        assert_eq!(e.ids, vec![2, 5, 6, 7, 3]);
        assert!(e.truncated);
        let b = t
            .batch(&["the cat", "", "the cat sat on"], &Device::Cpu)
            .unwrap();
        assert_eq!(b.lengths, vec![4, 2, 5]);
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![
                vec![2, 5, 6, 3, 0],
                vec![2, 3, 0, 0, 0],
                vec![2, 5, 6, 7, 3]
            ]
        );
        assert_eq!(
            b.attention_mask.to_vec2::<u32>().unwrap(),
            vec![
                vec![1, 1, 1, 1, 0],
                vec![1, 1, 0, 0, 0],
                vec![1, 1, 1, 1, 1]
            ]
        );
        assert!(t.batch(&[], &Device::Cpu).is_err());
    }

    #[test]
    fn pairs_have_segment_ids() {
        let (_d, t) = vocab_tokenizer(7);
        let b = t
            .batch_pairs(&[("the cat", "the mat on the mat")], &Device::Cpu)
            .unwrap();
        // Longest-first truncation: the second text loses tokens until 7 fit.
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![2, 5, 6, 3, 5, 10, 3]]
        );
        assert_eq!(
            b.token_type_ids.to_vec2::<u32>().unwrap(),
            vec![vec![0, 0, 0, 0, 1, 1, 1]]
        );
    }
}

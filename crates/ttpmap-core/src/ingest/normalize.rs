//! Text normalisation that never changes what a sentence says, and refanging of defanged
//! indicators for scoring.
//!
//! Owns [`normalize`] (the canonical form every [`crate::Document::text`] is in),
//! [`reflow`] (joining hard-wrapped lines of plain text and PDF output) and [`refang`] /
//! [`refang_text`] (what scorers see: `hxxps://evil[.]com` -> `https://evil.com`).
//!
//! Analysts defang indicators on purpose, so a document's text keeps them as written: what is
//! shown and exported is the report's own text. Only the scoring input is refanged
//! ([`crate::pipeline::extract`] calls [`refang_text`] on each sentence).
//!
//! Invariants of the output of [`normalize`]:
//! - only `\n` line breaks (no `\r`, form feeds, U+2028/2029), no other control characters;
//! - no zero-width characters, soft hyphens or byte-order marks;
//! - no runs of spaces, no tabs, no leading/trailing spaces on a line, at most one blank line
//!   in a row, no leading/trailing blank lines;
//! - typographic quotes and dashes are ASCII; ligatures and full-width ASCII are expanded
//!   (NFKC is applied to those code points only, so superscripts, fractions, CJK and other
//!   compatibility characters are left as written); the rest is NFC;
//! - defanged indicators are kept as written (`hxxps://evil[.]com` stays so).
//!
//! Lines are kept: they are the structural signal the segmenter uses (headings, list items and
//! table rows are lines of their own).

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Normalises `text` (see the module documentation for the guarantees).
pub fn normalize(text: &str) -> String {
    super::work::add(text.len() as u64);
    // 1. Character-level mapping.
    let mut mapped = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                mapped.push('\n');
            }
            '\n' | '\u{2028}' | '\u{0085}' => mapped.push('\n'),
            '\u{2029}' | '\u{000C}' => mapped.push_str("\n\n"),
            '\t' | '\u{000B}' => mapped.push(' '),
            // Zero-width characters, soft hyphen, BOM, word joiner, bidi marks.
            '\u{200B}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
            | '\u{00AD}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' => {}
            // Non-breaking and other Unicode spaces.
            '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}' => mapped.push(' '),
            // Quotes.
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{FF07}' => {
                mapped.push('\'')
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{FF02}' => {
                mapped.push('"')
            }
            // Dashes and the minus sign.
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => {
                mapped.push('-')
            }
            '\u{2026}' => mapped.push_str("..."),
            // Ligatures (U+FB00..U+FB06) and full-width ASCII: NFKC on these code points only.
            '\u{FB00}'..='\u{FB06}' | '\u{FF01}'..='\u{FF5E}' => mapped.extend(c.nfkc()),
            c if c.is_control() => {}
            c => mapped.push(c),
        }
    }
    super::work::add(mapped.len() as u64);
    let mapped: String = if mapped.is_ascii() {
        mapped
    } else {
        mapped.nfc().collect()
    };

    // 2. Whitespace: collapse within lines, trim lines, at most one blank line in a row.
    let mut out = String::with_capacity(mapped.len());
    let mut blank_run = 0usize;
    for line in mapped.split('\n') {
        super::work::add(line.len() as u64 + 1);
        let mut collapsed = String::with_capacity(line.len());
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            if !collapsed.is_empty() {
                collapsed.push(' ');
            }
            collapsed.push_str(word);
        }
        if collapsed.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(&collapsed);
    }
    out
}

static HXXP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bh(?:xx|\*\*|__)p(s?)(\[:\]|\(:\)|:)(//|\\\\)").expect("static regex")
});
static BRACKETED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s?(\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\}|\[:\]|\(:\)|\[://\]|\[@\]|\(@\)|\{@\}|\[at\]|\(at\))\s?")
        .expect("static regex")
});

/// [`refang`] applied to each line of `text` (a sentence may span lines); borrows when there is
/// nothing to refang.
pub fn refang_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['[', '(', '{']) && !text.to_ascii_lowercase().contains("xxp") {
        return std::borrow::Cow::Borrowed(text);
    }
    let lines: Vec<String> = text.split('\n').map(refang).collect();
    std::borrow::Cow::Owned(lines.join("\n"))
}

/// Refangs defanged indicators in one line: `hxxp(s)` -> `http(s)` (before `://`, `[:]//`),
/// `[.]`, `(.)`, `{.}`, `[dot]` -> `.`, `[:]` -> `:`, `[://]` -> `://`, `[@]`, `[at]`, `(at)` -> `@`.
///
/// A bracketed marker (and a single space around it) is only replaced between two indicator
/// characters (letters, digits, `-`, `_`, and for `[:]` also `/`), so prose such as
/// "see note [at] the end" keeps its meaning while `user [at] evil[.]com` becomes `user@evil.com`.
pub fn refang(line: &str) -> String {
    // Both patterns have a bounded length, so each pass is linear in the line.
    super::work::add(line.len() as u64);
    if !line.contains(['[', '(', '{']) && !line.to_ascii_lowercase().contains("xxp") {
        return line.to_string();
    }
    let line = HXXP.replace_all(line, |c: &regex::Captures<'_>| format!("http{}://", &c[1]));
    super::work::add(2 * line.len() as u64);
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for m in BRACKETED.captures_iter(&line) {
        let (Some(whole), Some(marker)) = (m.get(0), m.get(1)) else {
            continue;
        };
        let before = line[..whole.start()].chars().next_back();
        let after = line[whole.end()..].chars().next();
        let ind = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
        let marker_l = marker.as_str().to_ascii_lowercase();
        let replacement = match marker_l.as_str() {
            "[.]" | "(.)" | "{.}" | "[dot]" | "(dot)" | "{dot}" => ".",
            "[:]" | "(:)" => ":",
            "[://]" => "://",
            _ => "@",
        };
        let spaced = whole.as_str().starts_with(' ') || whole.as_str().ends_with(' ');
        let word_marker = marker_l.contains("dot") || marker_l.contains("at");
        let ok_after = ind(after) || (replacement.starts_with(':') && after == Some('/'));
        // `[.]` directly between characters is unambiguous; a spaced or spelled-out marker must
        // sit between indicator characters and the whole thing must look like a host or address.
        // Symbol markers count only when tight (`evil[.]com`); spaced or spelled-out markers only
        // when spelled out and the neighbours look like parts of an address.
        let ok = ind(before)
            && ok_after
            && if spaced || word_marker {
                word_marker && looks_like_indicator(&line, whole.start(), whole.end())
            } else {
                true
            };
        out.push_str(&line[last..whole.start()]);
        if ok {
            out.push_str(replacement);
        } else {
            out.push_str(whole.as_str());
        }
        last = whole.end();
    }
    out.push_str(&line[last..]);
    out
}

/// For spelled-out or spaced markers (`user [at] example [dot] com`): the words around it
/// must be single tokens without sentence punctuation and the one after must not be a common
/// English word (so `look [at] them` stays prose).
fn looks_like_indicator(line: &str, start: usize, end: usize) -> bool {
    const PROSE: &[&str] = &[
        "the", "a", "an", "this", "that", "these", "those", "them", "it", "all", "least", "most",
        "first", "last", "once", "times", "which", "of", "and", "or", "to", "in", "on", "for",
        "is", "be", "with", "by", "what", "when", "where", "his", "her", "their", "our", "your",
        "my", "its",
    ];
    let after = line[end..].trim_start();
    let next: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .collect();
    let before = line[..start].trim_end();
    super::work::add((line.len() - end - after.len() + next.len() + start - before.len()) as u64);
    let prev_ok = before
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric());
    !next.is_empty() && prev_ok && !PROSE.contains(&next.to_ascii_lowercase().as_str())
}

/// How aggressively [`reflow`] joins lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reflow {
    /// Plain text: join a line to the previous one only when the previous line does not end a
    /// sentence and either the new line starts with a lower-case letter (and the previous one
    /// has at least 40 characters), or the text looks hard-wrapped (the 90th percentile of
    /// line lengths is 50-100 characters and no line is longer than 120) and the previous line
    /// is at least 70% of that width.
    Conservative,
    /// PDF text layers: every wrapped line of a paragraph is joined unless the previous line
    /// ends a sentence or is much shorter than the typical line (a heading, a list item).
    Aggressive,
}

/// Joins hard-wrapped lines of normalised text into paragraph lines. List items (lines
/// starting with a bullet or `1.`), blank lines and lines that end a sentence are never joined.
/// A line ending in `letter-` is joined without a space (the hyphen is kept).
pub fn reflow(text: &str, mode: Reflow) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    // Each line is measured once as itself and once as `prev`; sorting the lengths is
    // n log n in the number of lines.
    super::work::add(
        2 * text.len() as u64
            + lines.len() as u64 * (1 + u64::from(lines.len().checked_ilog2().unwrap_or(0))),
    );
    let mut lens: Vec<usize> = lines
        .iter()
        .map(|l| l.chars().count())
        .filter(|&n| n > 0)
        .collect();
    lens.sort_unstable();
    let typical = lens
        .get(lens.len().saturating_mul(9) / 10)
        .copied()
        .unwrap_or(0);
    // Hard-wrapped text: the 90th percentile line is 50-100 characters and no line exceeds 120.
    let wrapped = (50..=100).contains(&typical) && lens.last().is_some_and(|&m| m <= 120);
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            let prev = lines[i - 1];
            if should_join(prev, line, mode, typical, wrapped) {
                if prev.ends_with('-')
                    && prev.len() >= 2
                    && prev[..prev.len() - 1].ends_with(char::is_alphabetic)
                {
                    // joined without a space: `pre-` + `processing`
                } else {
                    out.push(' ');
                }
                out.push_str(line);
                continue;
            }
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

fn should_join(prev: &str, line: &str, mode: Reflow, typical: usize, wrapped: bool) -> bool {
    if prev.is_empty() || line.is_empty() || starts_list_item(line) {
        return false;
    }
    let end = prev.trim_end_matches(['"', '\'', ')', ']']);
    if end.ends_with(['.', '!', '?', ':', ';']) || prev.contains(" | ") {
        return false;
    }
    let first = line.chars().next().unwrap_or(' ');
    let prev_len = prev.chars().count();
    match mode {
        Reflow::Conservative => {
            (first.is_lowercase() && prev_len >= 40) || (wrapped && prev_len * 10 >= typical * 7)
        }
        Reflow::Aggressive => {
            first.is_lowercase() || prev.ends_with([',', '-']) || prev_len * 10 >= typical * 7
        }
    }
}

/// True when a line starts with a bullet (`•`, `-`, `*`, `+`, `▪`, `◦`, `‣`, `o`) followed by a
/// space, or with a list number (`1.`, `2)`, `a)`, `(iv)`).
pub(crate) fn starts_list_item(line: &str) -> bool {
    static ITEM: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:[•\-*+▪◦‣·o] |\(?\d{1,3}[.)] |\(?[a-zA-Z][.)] |\(?[ivxIVX]{1,4}[.)] )")
            .expect("static regex")
    });
    ITEM.is_match(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_typography_and_invisible_characters() {
        let s = "The \u{FB01}le \u{201C}invoice\u{201D} \u{2014} it\u{2019}s a\u{00A0}trap\u{200B}\u{00AD}!";
        assert_eq!(normalize(s), "The file \"invoice\" - it's a trap!");
    }

    #[test]
    fn keeps_compatibility_characters_other_than_ligatures() {
        assert_eq!(normalize("x² ½ ™ 東京"), "x² ½ ™ 東京");
        assert_eq!(normalize("ＡＢＣ１"), "ABC1");
    }

    #[test]
    fn collapses_whitespace_but_keeps_lines() {
        let s = "\r\n  Title \t here  \r\n\r\n\r\n\r\nBody   line\r\n";
        assert_eq!(normalize(s), "Title here\n\nBody line");
    }

    #[test]
    fn refangs_indicators() {
        assert_eq!(
            refang("hxxps://evil[.]example[.]com/a and hXXp[:]//10[.]0[.]0[.]1:8080"),
            "https://evil.example.com/a and http://10.0.0.1:8080"
        );
        assert_eq!(
            refang("mail ops[@]evil(.)biz or x [at] y [dot] net"),
            "mail ops@evil.biz or x@y.net"
        );
        assert_eq!(refang("evil{.}com"), "evil.com");
        assert_eq!(
            refang_text("a hxxp://x[.]io\nb y[.]net"),
            "a http://x.io\nb y.net"
        );
        assert!(matches!(
            refang_text("nothing to do"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn normalize_keeps_defanged_indicators_as_written() {
        let s = "Beacons  to hxxps://update-cdn[.]top and ops[@]evil(.)biz";
        assert_eq!(
            normalize(s),
            "Beacons to hxxps://update-cdn[.]top and ops[@]evil(.)biz"
        );
    }

    #[test]
    fn leaves_prose_brackets_alone() {
        assert_eq!(refang("look [at] them"), "look [at] them");
        assert_eq!(
            refang("a list [.] of (.) things"),
            "a list [.] of (.) things"
        );
        assert_eq!(
            refang("the ellipsis (...) stays"),
            "the ellipsis (...) stays"
        );
    }

    #[test]
    fn reflow_joins_wrapped_lines() {
        let t = "The actor used a spearphishing email with an\nattached document. It ran a macro.\n- item one\n- item two";
        assert_eq!(
            reflow(t, Reflow::Conservative),
            "The actor used a spearphishing email with an attached document. It ran a macro.\n- item one\n- item two"
        );
        let p = "Results\nThe loader decrypts the payload with a\nhard-coded RC4 key and then con-\ntacts the server.";
        assert_eq!(
            reflow(p, Reflow::Aggressive),
            "Results\nThe loader decrypts the payload with a hard-coded RC4 key and then con-tacts the server."
        );
    }

    #[test]
    fn linear_work() {
        use super::super::work::assert_linear;
        let run = |s: &str| refang_text(&reflow(&normalize(s), Reflow::Aggressive)).into_owned();
        assert_linear(
            "spelled-out markers",
            5_000,
            |n| "x [at] y [dot] ".repeat(n),
            run,
        );
        assert_linear("bracketed dots", 5_000, |n| "[.]".repeat(n), run);
        assert_linear("hxxp", 5_000, |n| "hxxp[:]//a ".repeat(n), run);
        assert_linear("spaces", 5_000, |n| " ".repeat(n) + "[at] b", run);
        assert_linear(
            "wrapped lines",
            2_000,
            |n| "the loader decrypts the payload with a key and\n".repeat(n),
            run,
        );
        assert_linear(
            "unicode",
            5_000,
            |n| "e\u{301}\u{FB01}\u{200B}\r\n".repeat(n),
            run,
        );
    }
}

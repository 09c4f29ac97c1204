//! Sentence segmentation written for CTI prose.
//!
//! Owns [`split_sentences`]. Invariants of its output, for any input `text`:
//! - spans are byte ranges on `char` boundaries, in order, non-overlapping;
//! - `&text[s.start..s.end]` is non-empty, has no leading/trailing whitespace and contains at
//!   least one alphanumeric character (lines of pure punctuation such as `-----` are dropped);
//! - no span crosses a line break: every line (heading, list item, table row) is its own block;
//! - no span is longer than [`MAX_SENTENCE_BYTES`].
//!
//! Within a line a sentence ends at `.`, `!` or `?` (optionally followed by closing quotes or
//! brackets) followed by a space and an upper-case letter, a digit, a quote or an opening
//! bracket, or a lower-case file name (`... via cmd.exe. rundll32.exe then ...`). Because the
//! punctuation must be followed by whitespace, dots inside IPs, domains, file names, versions,
//! hashes, URLs, e-mail addresses and ATT&CK ids never end a sentence. Not a boundary either:
//! known abbreviations (`e.g.`, `i.e.`, `etc.`, `vs.`, `Fig.`, `No.`, `Inc.`, `Dr.`, `approx.`
//! ...), dotted abbreviations (`U.S.`), upper-case initials (`J. Smith`), list markers at the
//! start of a line (`1. Open the file`), caption labels opening a sentence (`Figure 3. Beacon
//! traffic`) and ellipses. A leading bullet (`• `, `- `, `* `) is
//! not part of the sentence.

use std::sync::LazyLock;

use regex::Regex;

use crate::types::Span;

/// Longest sentence handed downstream, in bytes. Longer runs (minified scripts, base64 blobs,
/// text without punctuation) are cut at the last whitespace before this limit, or, when a
/// chunk has no whitespace at all, at the last punctuation (`,;|&/`) or `char` boundary.
pub const MAX_SENTENCE_BYTES: usize = 2000;

/// Abbreviations (lower case, without the final dot) after which a `.` does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "cf", "viz", "approx", "appx", "ca", "incl", "esp", "resp", "fig",
    "figs", "no", "nos", "nr", "vol", "vols", "p", "pp", "ch", "sec", "sect", "ref", "refs", "ver",
    "rev", "ed", "eds", "al", "inc", "ltd", "corp", "co", "llc", "plc", "gmbh", "dept", "univ",
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "col", "lt", "sgt", "capt",
    "gov", "sen", "rep", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "est", "min", "max", "avg",
    "u.s", "u.k", "u.n", "e.u", "a.m", "p.m", "a.k.a", "aka", "n.b", "ph.d", "op", "cit", "seq",
];

/// Caption labels: `Figure 3.` at the start of a sentence does not end it.
const CAPTIONS: &[&str] = &[
    "figure",
    "fig",
    "fig.",
    "table",
    "image",
    "img",
    "listing",
    "exhibit",
    "screenshot",
    "chart",
    "diagram",
    "picture",
    "appendix",
    "graph",
];

/// Splits `text` into sentence spans (see the module documentation).
pub fn split_sentences(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut line_start = 0usize;
    for line in text.split('\n') {
        super::work::add(line.len() as u64 + 1);
        split_line(text, line_start, line_start + line.len(), &mut out);
        line_start += line.len() + 1;
    }
    out
}

fn split_line(text: &str, start: usize, end: usize, out: &mut Vec<Span>) {
    let line = &text[start..end];
    let bytes = line.as_bytes();
    let mut seg_start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        if !matches!(bytes[i], b'.' | b'!' | b'?') {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < bytes.len() && matches!(bytes[j], b'.' | b'!' | b'?') {
            j += 1;
        }
        while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b')' | b']' | b'}' | b'*' | b'_')
        {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_whitespace() {
            let mut k = j;
            while k < bytes.len() && bytes[k].is_ascii_whitespace() {
                k += 1;
            }
            if k < bytes.len() && is_boundary(line, seg_start, i, j, k) {
                push_segment(text, start + seg_start, start + j, true, out);
                seg_start = k;
            }
            i = k;
        } else {
            i = j;
        }
    }
    push_segment(text, start + seg_start, end, seg_start == 0, out);
}

/// `p..j` is the punctuation cluster, `k` the first byte of the next word.
fn is_boundary(line: &str, seg_start: usize, p: usize, j: usize, k: usize) -> bool {
    let cluster = &line[p..j];
    let punct: &str = cluster.trim_end_matches(['"', '\'', ')', ']', '}', '*', '_']);
    if punct.starts_with("..") {
        return false; // ellipsis
    }
    let rest = &line[k..];
    let Some(next) = rest.chars().next() else {
        return false;
    };
    let starter = next.is_uppercase()
        || next.is_ascii_digit()
        || matches!(next, '"' | '\'' | '(' | '[' | '`' | '*' | '#' | '$' | '%')
        || (next.is_lowercase() && starts_with_file_name(rest));
    if !starter {
        return false;
    }
    if !punct.starts_with('.') {
        return true;
    }
    // The word before the dot.
    let before = &line[seg_start..p];
    // After the last whitespace char (U+2000 and friends are 3 bytes: found by fuzzing).
    let word_start = before
        .char_indices()
        .rfind(|(_, c)| c.is_whitespace())
        .map_or(0, |(w, c)| w + c.len_utf8());
    super::work::add((before.len() - word_start) as u64 + 1);
    let word = before[word_start..].trim_start_matches(['(', '[', '{', '"', '\'', '*', '_']);
    if word.is_empty() {
        return true;
    }
    let lower = word.to_lowercase();
    super::work::add(word.len() as u64);
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return false;
    }
    // Initials (`J. Smith`) and dotted abbreviations (`U.S.`, `e.g.` written `E.g.`).
    let mut cs = word.chars();
    if let (Some(c), None) = (cs.next(), cs.next()) {
        if c.is_uppercase() {
            return false; // an initial; a lower-case letter (`60 s.`) ends normally
        }
    }
    if is_dotted_abbreviation(word) {
        return false;
    }
    // Caption labels: `Figure 3. Beacon traffic` when `Figure 3.` opens the sentence.
    let lead = before[..word_start]
        .trim()
        .trim_start_matches(['(', '[', '*', '_', '#', '|', ' ']);
    // Trimming scanned what it removed; lower-casing the lead (once per boundary found: when it
    // is not a caption the `.` ends the sentence) scans the lead.
    super::work::add((word_start - lead.len()) as u64);
    if word.bytes().all(|b| b.is_ascii_alphanumeric())
        && word.bytes().any(|b| b.is_ascii_digit())
        && {
            super::work::add(lead.len() as u64);
            CAPTIONS.contains(&lead.to_lowercase().as_str())
        }
    {
        return false;
    }
    // List markers at the start of a line: `1. Open`, `iv. Run`, `a. Then`.
    let at_line_start =
        seg_start + word_start == 0 || line[..seg_start + word_start].trim().is_empty();
    if at_line_start && is_list_number(word) {
        return false;
    }
    true
}

/// `U.S`, `e.g`, `a.m`, `Ph.D`: letters separated by single dots, every part 1-2 letters.
fn is_dotted_abbreviation(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.chars().count()) && p.chars().all(char::is_alphabetic))
}

fn is_list_number(word: &str) -> bool {
    (1..=3).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_digit())
        || (1..=4).contains(&word.len())
            && word
                .bytes()
                .all(|b| matches!(b, b'i' | b'v' | b'x' | b'I' | b'V' | b'X'))
}

static FILE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[\w\-]+(?:\.[\w\-]+)*\.(?:exe|dll|sys|ps1|psm1|bat|cmd|vbs|vbe|js|jse|hta|lnk|scr|cpl|msi|jar|py|sh|elf|bin|dat|tmp|zip|rar|7z|iso|img|docx?|docm|xlsx?|xlsm|pptx?|rtf|pdf|one|txt|log|ini|cfg|conf|so|dylib|apk|ocx|wsf)\b")
        .expect("static regex")
});

/// The leading run of characters a file name can contain.
static NAME_CHARS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[\w\-.]*").expect("static regex"));

/// [`FILE_NAME`] at the start of `rest`. Only the leading run of name characters is searched
/// (every match lies in it, and its end is a word boundary as the next character is not a word
/// character), so the cost is that run, not the rest of the line.
fn starts_with_file_name(rest: &str) -> bool {
    let token = NAME_CHARS.find(rest).map_or("", |m| m.as_str());
    super::work::add(token.len() as u64 + 1);
    FILE_NAME.is_match(token)
}

/// Trims, drops a leading bullet, drops segments without alphanumerics, and cuts segments
/// longer than [`MAX_SENTENCE_BYTES`].
fn push_segment(text: &str, start: usize, end: usize, line_start: bool, out: &mut Vec<Span>) {
    let seg = &text[start..end];
    let lead = seg.len() - seg.trim_start().len();
    let mut s = start + lead;
    let e = start + seg.trim_end().len();
    if s >= e {
        return; // only whitespace (found by fuzzing: `&text[s..e]` below panicked)
    }
    if line_start {
        let t = &text[s..e];
        for bullet in ["• ", "- ", "* ", "+ ", "▪ ", "◦ ", "‣ ", "· ", "> "] {
            if let Some(rest) = t.strip_prefix(bullet) {
                s = e - rest.trim_start().len();
                break;
            }
        }
    }
    if s >= e || !text[s..e].chars().any(char::is_alphanumeric) {
        return;
    }
    while e - s > MAX_SENTENCE_BYTES {
        let cut = cut_point(text, s, s + MAX_SENTENCE_BYTES);
        let piece = text[s..cut].trim_end();
        if piece.chars().any(char::is_alphanumeric) {
            out.push(Span::new(s, s + piece.len()));
        }
        let rest = &text[cut..e];
        s = e - rest.trim_start().len();
    }
    if s < e && text[s..e].chars().any(char::is_alphanumeric) {
        out.push(Span::new(s, e));
    }
}

/// Where to cut a too-long segment starting at `s`, at or before `limit` (a byte index).
fn cut_point(text: &str, s: usize, limit: usize) -> usize {
    let mut limit = limit.min(text.len());
    while !text.is_char_boundary(limit) {
        limit -= 1;
    }
    let window = &text[s..limit];
    let min = window.len() / 2; // never make tiny chunks
    if let Some(w) = window.rfind(char::is_whitespace).filter(|&w| w >= min) {
        return s + w;
    }
    if let Some(w) = window
        .rfind([',', ';', '|', '&', '/', '>', '}', ')'])
        .filter(|&w| w >= min)
    {
        return s + w + 1;
    }
    if limit > s {
        limit
    } else {
        // A single char longer than the window cannot happen (the limit is 2000 bytes); keep
        // progress anyway.
        text[s..]
            .chars()
            .next()
            .map_or(text.len(), |c| s + c.len_utf8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sents(text: &str) -> Vec<&str> {
        split_sentences(text)
            .into_iter()
            .map(|s| &text[s.start..s.end])
            .collect()
    }

    #[test]
    fn splits_plain_prose() {
        assert_eq!(
            sents("The actor sent an email. It had a macro! Did it run? \"Yes,\" they said."),
            vec![
                "The actor sent an email.",
                "It had a macro!",
                "Did it run?",
                "\"Yes,\" they said."
            ]
        );
    }

    #[test]
    fn keeps_indicators_whole() {
        let t = "It beaconed to 10.0.0.1 and evil.example.com via cmd.exe and rundll32.exe with payload.dll and a.b.ps1 (v2.2.1, 1.0). See T1059.001 and HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run for details.";
        assert_eq!(sents(t).len(), 2, "{:?}", sents(t));
    }

    #[test]
    fn sentence_may_end_with_a_file_name() {
        assert_eq!(
            sents("The dropper wrote update.exe. Then it ran. It launched cmd.exe. rundll32.exe loaded the DLL."),
            vec!["The dropper wrote update.exe.", "Then it ran.", "It launched cmd.exe.", "rundll32.exe loaded the DLL."]
        );
    }

    #[test]
    fn abbreviations_initials_and_markers() {
        assert_eq!(sents("Tools, e.g. Mimikatz, etc. Were used.").len(), 1);
        assert_eq!(
            sents("Acme Inc. And Foo Ltd. Were hit by J. Smith in the U.S. Army.").len(),
            1
        );
        assert_eq!(
            sents("See Fig. 3 and No. 5 for approx. 300 hosts.").len(),
            1
        );
        assert_eq!(
            sents("1. Open the file.\n2. Enable content."),
            vec!["1. Open the file.", "2. Enable content."]
        );
        assert_eq!(
            sents("Wait... Then nothing."),
            vec!["Wait... Then nothing."]
        );
    }

    #[test]
    fn lines_are_blocks_and_bullets_are_dropped() {
        assert_eq!(
            sents("Persistence\n-----------\n• Scheduled task\n- Run key\nIP | 10.0.0.1 | C2"),
            vec![
                "Persistence",
                "Scheduled task",
                "Run key",
                "IP | 10.0.0.1 | C2"
            ]
        );
    }

    #[test]
    fn long_runs_are_chunked() {
        let blob = "abc ".repeat(1500) + "end.";
        let spans = split_sentences(&blob);
        assert!(spans.len() >= 3);
        for s in &spans {
            assert!(s.len() <= MAX_SENTENCE_BYTES);
            assert_eq!(blob[s.start..s.end].trim(), &blob[s.start..s.end]);
        }
        let nospace = "é".repeat(3000);
        let spans = split_sentences(&nospace);
        assert_eq!(spans.iter().map(Span::len).sum::<usize>(), nospace.len());
    }

    #[test]
    fn whitespace_only_lines_of_unnormalised_text() {
        // Found by the `text` fuzz target: a line of only whitespace panicked.
        assert!(split_sentences(" ").is_empty());
        assert_eq!(sents("a b\n \u{b}\n\t\nc d"), vec!["a b", "c d"]);
        // ... and a multi-byte space before a word ending in `.` was sliced mid-char.
        assert_eq!(sents("x\u{2000}a. B c"), vec!["x\u{2000}a.", "B c"]);
    }

    #[test]
    fn linear_work() {
        use super::super::work::assert_linear;
        let run = |s: &str| split_sentences(s);
        assert_linear(
            "lower-case continuations",
            5_000,
            |n| "a. b. ".repeat(n),
            run,
        );
        assert_linear("initials", 5_000, |n| "A. B. ".repeat(n), run);
        assert_linear("captions", 5_000, |n| "Figure 1. Figure 2. ".repeat(n), run);
        assert_linear("leading brackets", 5_000, |n| "(".repeat(n) + " x1. Y", run);
        assert_linear("file names", 5_000, |n| "x. a.b.c.d.e.exe ".repeat(n), run);
        assert_linear("long word", 5_000, |n| "x".repeat(n) + ". Y z", run);
        assert_linear("no punctuation", 5_000, |n| "word ".repeat(n), run);
        assert_linear("many lines", 5_000, |n| "1. Open it.\n".repeat(n), run);
    }
}

//! Markdown to plain text lines (a small hand-written converter; no Markdown dependency).
//!
//! Owns [`markdown_to_text`]. Output: one block per line. ATX and setext headings, list items
//! (markers and task boxes removed), table rows (cells joined with ` | `, the `|---|` row
//! dropped) and lines of fenced or indented code are lines of their own; consecutive paragraph
//! lines are joined with a space; blocks are separated by a blank line. Inline markup is
//! stripped while its text is kept: `[t](u)` and `![t](u)` -> `t`, `<http://x>` -> `http://x`,
//! emphasis markers, backticks (code span contents are kept verbatim), backslash escapes.
//! Underscores and asterisks inside words (`__init__.py`, `C:\*.exe`, `snake_case`) are kept.
//! YAML front matter at the top is skipped. The title is the first level-1 heading, else the
//! front matter's `title:`, else the first heading.
//!
//! Hostile input: no recursion (blocks are read line by line, nesting markers are stripped, not
//! descended into) and linear work per line: inline markup is removed by one-pass scanners
//! equivalent to the regexes they replace (a `replace_all` can rescan the rest of a line for
//! each match), emphasis pairs are found with a stack per run kind, and an unclosed code span
//! is ruled out in O(1).

use std::sync::LazyLock;

use regex::Regex;

use crate::types::Block;

static ATX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$").expect("static regex")
});
static ITEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?(.*)$").expect("static regex")
});
static RULE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^ {0,3}(?:(?:-\s*){3,}|(?:\*\s*){3,}|(?:_\s*){3,})$").expect("static regex")
});
static SETEXT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^ {0,3}(?:=+|-+)\s*$").expect("static regex"));
static TABLE_SEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)+\|?\s*$").expect("static regex")
});
static LINK_DEF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^ {0,3}\[[^\]]+\]:\s+\S+").expect("static regex"));

/// Converts Markdown to `(title, text)`; the text has one block per line.
pub fn markdown_to_text(md: &str) -> (Option<String>, String) {
    let (title, text, _) = markdown_to_blocks(md);
    (title, text)
}

/// [`markdown_to_text`] plus the kind of each line of the text (one entry per `\n`-ended
/// line, blank separator lines included as paragraphs).
pub fn markdown_to_blocks(md: &str) -> (Option<String>, String, Vec<Block>) {
    let mut out: Vec<(String, Block)> = Vec::new();
    let mut para: Vec<String> = Vec::new();
    // The kind of the pending paragraph: a list item's continuation lines stay a list item.
    let mut para_kind = Block::Paragraph;
    let mut first_h1: Option<String> = None;
    let mut first_heading: Option<String> = None;
    let mut fence: Option<String> = None;
    let lines: Vec<&str> = md.lines().collect();

    let flush = |para: &mut Vec<String>, out: &mut Vec<(String, Block)>, kind: &mut Block| {
        if !para.is_empty() {
            out.push((para.join(" "), *kind));
            para.clear();
        }
        *kind = Block::Paragraph;
    };

    // YAML front matter (`---` ... `---` or `...` at the very top) is metadata, not text; its
    // `title:` is the fallback title.
    let mut i = 0;
    let mut front_title: Option<String> = None;
    if lines.first().is_some_and(|l| l.trim_end() == "---") {
        if let Some(end) = lines
            .iter()
            .skip(1)
            .take(200)
            .position(|l| matches!(l.trim_end(), "---" | "..."))
        {
            for l in &lines[1..=end] {
                if let Some(t) = l.strip_prefix("title:") {
                    let t = t.trim().trim_matches(['"', '\'']).trim();
                    if !t.is_empty() {
                        front_title = Some(t.to_string());
                    }
                }
            }
            i = end + 2;
        }
    }
    while i < lines.len() {
        let raw = lines[i];
        let trimmed = raw.trim();
        // At most a few anchored regex searches per line (each linear in the line) and the
        // inline pass, which counts its own work.
        super::work::add(8 * raw.len() as u64 + 1);
        i += 1;
        if let Some(f) = &fence {
            if trimmed.starts_with(f.as_str())
                && trimmed
                    .trim_start_matches(f.chars().next().unwrap_or('`'))
                    .trim()
                    .is_empty()
            {
                fence = None;
                out.push((String::new(), Block::Paragraph));
            } else if !trimmed.is_empty() {
                out.push((trimmed.to_string(), Block::Code));
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            flush(&mut para, &mut out, &mut para_kind);
            let ch = trimmed.chars().next().unwrap_or('`');
            let n = trimmed.chars().take_while(|&c| c == ch).count();
            fence = Some(std::iter::repeat_n(ch, n).collect());
            continue;
        }
        if trimmed.is_empty() {
            flush(&mut para, &mut out, &mut para_kind);
            if out.last().is_some_and(|l| !l.0.is_empty()) {
                out.push((String::new(), Block::Paragraph));
            }
            continue;
        }
        if LINK_DEF.is_match(raw) {
            continue;
        }
        // Setext heading underline: turns the pending paragraph into a heading.
        if SETEXT.is_match(raw) && !para.is_empty() {
            let heading = para.join(" ");
            para.clear();
            if raw.trim_start().starts_with('=') && first_h1.is_none() {
                first_h1 = Some(heading.clone());
            }
            first_heading.get_or_insert_with(|| heading.clone());
            out.push((heading, Block::Heading));
            out.push((String::new(), Block::Paragraph));
            para_kind = Block::Paragraph;
            continue;
        }
        if RULE.is_match(raw) {
            flush(&mut para, &mut out, &mut para_kind);
            continue;
        }
        if let Some(c) = ATX.captures(raw) {
            flush(&mut para, &mut out, &mut para_kind);
            let level = c.get(1).map_or(1, |m| m.as_str().len());
            let text = inline(c.get(2).map_or("", |m| m.as_str()));
            if !text.is_empty() {
                if level == 1 && first_h1.is_none() {
                    first_h1 = Some(text.clone());
                }
                first_heading.get_or_insert_with(|| text.clone());
                out.push((text, Block::Heading));
                out.push((String::new(), Block::Paragraph));
            }
            continue;
        }
        if trimmed.starts_with('|')
            || (trimmed.contains('|') && lines.get(i).is_some_and(|n| TABLE_SEP.is_match(n)))
        {
            if TABLE_SEP.is_match(raw) {
                continue;
            }
            flush(&mut para, &mut out, &mut para_kind);
            let row = trimmed.strip_prefix('|').unwrap_or(trimmed);
            let row = row.strip_suffix('|').unwrap_or(row);
            let cells: Vec<String> = split_cells(row)
                .iter()
                .map(|c| inline(c.trim()))
                .filter(|c| !c.is_empty())
                .collect();
            if !cells.is_empty() {
                out.push((cells.join(" | "), Block::TableRow));
            }
            continue;
        }
        if TABLE_SEP.is_match(raw) {
            continue;
        }
        if let Some(c) = ITEM.captures(raw) {
            flush(&mut para, &mut out, &mut para_kind);
            para.push(inline(c.get(1).map_or("", |m| m.as_str())));
            para_kind = Block::ListItem;
            continue;
        }
        // Indented code (4 spaces) outside a paragraph or list item: a line of its own.
        if para.is_empty() && (raw.starts_with("    ") || raw.starts_with('\t')) {
            out.push((trimmed.to_string(), Block::Code));
            continue;
        }
        let text = trimmed.trim_start_matches('>').trim();
        if !text.is_empty() {
            para.push(inline(text));
        }
    }
    flush(&mut para, &mut out, &mut para_kind);
    let mut text = String::new();
    let mut kinds = Vec::with_capacity(out.len());
    for (line, kind) in out {
        text.push_str(&line);
        text.push('\n');
        kinds.push(kind);
    }
    (first_h1.or(front_title).or(first_heading), text, kinds)
}

/// Splits a table row on `|` not escaped with a backslash and not inside a code span.
fn split_cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut in_code = false;
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                if let Some(cell) = cells.last_mut() {
                    cell.push('|');
                }
                chars.next();
            }
            '`' => {
                in_code = !in_code;
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
            '|' if !in_code => cells.push(String::new()),
            c => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
    }
    cells
}

/// Strips inline markup from one line, keeping code span contents verbatim.
pub(crate) fn inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // Alternate between prose and code spans (single or double backticks). A span opened by
    // `n` backticks closes at the next run of at least `n` backticks (at its first `n`); the
    // maximal runs after the current position and the longest of them are known up front, so a
    // span that never closes costs O(1) to rule out, not a scan of the rest of the line.
    let runs = tick_runs(s);
    let mut longest_after = vec![0usize; runs.len() + 1];
    for r in (0..runs.len()).rev() {
        longest_after[r] = longest_after[r + 1].max(runs[r].1);
    }
    super::work::add(s.len() as u64 + runs.len() as u64);
    let mut pos = 0; // start of the unprocessed rest of `s`
    let mut r = 0; // first run not before `pos`
    while let Some(&(run_start, run_len)) = runs.get(r) {
        // A run can have been partly consumed as the closer of the previous span.
        let open = run_start.max(pos);
        let ticks = run_start + run_len - open;
        r += 1;
        if ticks == 0 {
            continue;
        }
        let after = open + ticks;
        if longest_after[r] >= ticks {
            let mut c = r;
            while runs[c].1 < ticks {
                c += 1;
            }
            super::work::add((c - r + 1) as u64);
            let close = runs[c].0;
            out.push_str(&prose(&s[pos..open]));
            out.push_str(s[after..close].trim());
            pos = close + ticks;
            r = c;
        } else {
            out.push_str(&prose(&s[pos..after]));
            pos = after;
        }
    }
    out.push_str(&prose(&s[pos..]));
    out.trim().to_string()
}

/// Maximal runs of backticks: (byte offset, length).
fn tick_runs(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'`' {
            let start = i;
            while i < b.len() && b[i] == b'`' {
                i += 1;
            }
            runs.push((start, i - start));
        } else {
            i += 1;
        }
    }
    runs
}

fn prose(s: &str) -> String {
    let s = strip_html_tags(s);
    let s = strip_links(&s);
    let s = strip_autolinks(&s);
    let s = strip_emphasis(&s);
    unescape(&s)
}

/// The next occurrence of a char at or after a position, for lookups whose positions never
/// decrease: each byte is scanned at most once over all lookups.
struct Next {
    c: char,
    from: usize,
    found: Option<usize>,
}

impl Next {
    fn new(c: char) -> Self {
        Next {
            c,
            from: usize::MAX,
            found: None,
        }
    }

    fn at(&mut self, s: &str, from: usize) -> Option<usize> {
        let cached = self.from <= from && self.found.is_none_or(|f| f >= from);
        if !cached {
            let hay = s.get(from..).unwrap_or_default();
            let found = hay.find(self.c);
            super::work::add(found.map_or(hay.len(), |p| p + 1) as u64);
            self.found = found.map(|p| from + p);
            self.from = from;
        }
        self.found
    }
}

static WORD_CHAR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\w").expect("static regex"));

/// Removes the inline HTML tags and comments a Markdown author writes: the matches of
/// `</?(?:br|b|i|em|strong|u|sup|sub|span|kbd|code|p|div)\b[^>]*>|<!--.*?-->`, in one pass
/// (a regex `replace_all` can rescan the rest of the line for every match).
fn strip_html_tags(s: &str) -> String {
    const NAMES: &[&str] = &[
        "br", "b", "i", "em", "strong", "u", "sup", "sub", "span", "kbd", "code", "p", "div",
    ];
    if !s.contains('<') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let (mut gt, mut newline) = (Next::new('>'), Next::new('\n'));
    // No `-->` between this position and the next line break: (from, line break).
    let mut no_close: Option<(usize, usize)> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = s[i..].find('<') {
        let lt = i + off;
        super::work::add((off + 1) as u64);
        let mut end = None;
        let name_at = lt + 1 + usize::from(s[lt + 1..].starts_with('/'));
        let rest = &s[name_at..];
        let named = NAMES.iter().any(|n| {
            rest.starts_with(n)
                && !rest[n.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| WORD_CHAR.is_match(c.encode_utf8(&mut [0u8; 4])))
        });
        if named {
            end = gt.at(s, name_at).map(|g| g + 1);
        } else if s[lt..].starts_with("<!--") {
            // `.*?-->`: the first `-->` after `<!--`, on the same line.
            let nl = newline.at(s, lt).unwrap_or(s.len());
            let known_open = no_close.is_some_and(|(f, n)| f <= lt + 4 && lt < n);
            if !known_open {
                let hay = &s[lt + 4..nl.max(lt + 4)];
                let found = hay.find("-->");
                super::work::add(found.map_or(hay.len(), |p| p + 3) as u64);
                match found {
                    Some(p) => end = Some(lt + 4 + p + 3),
                    None => no_close = Some((lt + 4, nl)),
                }
            }
        }
        match end {
            Some(e) => {
                out.push_str(&s[copied..lt]);
                copied = e;
                i = e;
            }
            None => i = lt + 1,
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Replaces links and images by their text: the matches of
/// `!?\[([^\]]*)\](?:\([^)\s]*(?:\s+[^)]*)?\)|\[[^\]]*\])` by `$1`, in one pass.
/// (`[^)\s]*(?:\s+[^)]*)?` matches exactly the strings without `)`.)
fn strip_links(s: &str) -> String {
    if !s.contains('[') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let (mut text_end, mut paren, mut label_end) = (Next::new(']'), Next::new(')'), Next::new(']'));
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = s[i..].find('[') {
        let open = i + off;
        super::work::add((off + 1) as u64);
        let Some(close) = text_end.at(s, open + 1) else {
            break; // no `]` after this `[`, nor after any later one
        };
        let end = match s.as_bytes().get(close + 1) {
            Some(b'(') => paren.at(s, close + 2),
            Some(b'[') => label_end.at(s, close + 2),
            _ => None,
        };
        match end {
            Some(e) => {
                let start = if open > copied && s[..open].ends_with('!') {
                    open - 1
                } else {
                    open
                };
                out.push_str(&s[copied..start]);
                out.push_str(&s[open + 1..close]);
                copied = e + 1;
                i = e + 1;
            }
            None => i = open + 1,
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Replaces autolinks by their target: the matches of
/// `<((?:https?|ftp|mailto):[^>\s]+|[^>\s@]+@[^>\s]+)>` by `$1`, in one pass. Either way the
/// target is the whole run of characters other than `>` and whitespace after the `<`, and
/// must end at a `>`.
fn strip_autolinks(s: &str) -> String {
    if !s.contains('<') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    // The end of the current run of non-`>`, non-space chars: (run start, run end).
    let mut run: Option<(usize, usize)> = None;
    while let Some(off) = s[i..].find('<') {
        let lt = i + off;
        super::work::add((off + 1) as u64);
        let from = lt + 1;
        let end = match run {
            Some((a, e)) if a <= from && from <= e => e,
            _ => {
                let hay = &s[from..];
                let len = hay
                    .find(|c: char| c == '>' || c.is_whitespace())
                    .unwrap_or(hay.len());
                super::work::add(len as u64);
                run = Some((from, from + len));
                from + len
            }
        };
        let target = &s[from..end];
        let url = ["http:", "https:", "ftp:", "mailto:"]
            .iter()
            .any(|p| target.starts_with(p) && target.len() > p.len());
        let mail = target
            .find('@')
            .is_some_and(|a| a >= 1 && a + 1 < target.len());
        if s[end..].starts_with('>') && (url || mail) {
            out.push_str(&s[copied..lt]);
            out.push_str(target);
            copied = end + 1;
            i = end + 1;
        } else {
            i = lt + 1;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Removes `*`, `_` and `~~` runs used as emphasis. A run can open (followed by a non-space,
/// not preceded by a letter or digit) or close (preceded by a non-space, not followed by a letter,
/// a digit or `.` + letter/digit, so `__init__.py` stays); only matched opener/closer pairs of the
/// same character and length are removed: a closer pairs with the nearest open opener of its
/// kind, and openers opened after that one are abandoned.
fn strip_emphasis(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    super::work::add(chars.len() as u64);
    let runs = emphasis_runs(&chars);
    let mut strip = vec![false; chars.len()];
    // Open openers (run indices), and per kind their positions in `stack`: the nearest opener
    // of a kind is found in O(1); truncating pops each entry once.
    let mut stack: Vec<usize> = Vec::new();
    let mut by_kind: [Vec<usize>; 9] = Default::default();
    for (r, run) in runs.iter().enumerate() {
        super::work::add(1);
        let k = run.kind();
        if run.closes {
            if let Some(&pos) = by_kind[k].last() {
                let o = stack[pos];
                stack.truncate(pos);
                for v in by_kind.iter_mut() {
                    while v.last().is_some_and(|&p| p >= pos) {
                        v.pop();
                        super::work::add(1);
                    }
                }
                strip[runs[o].start..runs[o].end].fill(true);
                strip[run.start..run.end].fill(true);
                continue;
            }
        }
        if run.opens {
            by_kind[k].push(stack.len());
            stack.push(r);
        }
    }
    without(&chars, &strip)
}

/// A run of one emphasis character (`*`, `_`, `~`) in a line's chars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EmphasisRun {
    /// Char indices: `chars[start..end]` is the run.
    start: usize,
    end: usize,
    c: char,
    opens: bool,
    closes: bool,
}

impl EmphasisRun {
    /// Its kind, by char and length (`*`, `**`, `***`, `_`, `__`, `___`, `~~`): 0..9.
    fn kind(&self) -> usize {
        let base = match self.c {
            '*' => 0,
            '_' => 3,
            _ => 6,
        };
        base + (self.end - self.start).clamp(1, 3) - 1
    }
}

/// The runs of `chars` that may be emphasis, in order: `*`, `**`, `***`, the same of `_`, and
/// `~~`, not escaped; whether each can open and close is decided as [`strip_emphasis`] says.
fn emphasis_runs(chars: &[char]) -> Vec<EmphasisRun> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '*' | '_' | '~') && (i == 0 || chars[i - 1] != '\\') {
            let mut j = i;
            while j < chars.len() && chars[j] == c {
                j += 1;
            }
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(j).copied();
            let word = |x: Option<char>| x.is_some_and(char::is_alphanumeric);
            let space = |x: Option<char>| x.is_none_or(char::is_whitespace);
            let dotted = next == Some('.') && word(chars.get(j + 1).copied());
            if j - i <= 3 && (c != '~' || j - i == 2) {
                runs.push(EmphasisRun {
                    start: i,
                    end: j,
                    c,
                    opens: !space(next) && !word(prev),
                    closes: !space(prev) && !word(next) && !dotted,
                });
            }
            i = j;
        } else {
            i += 1;
        }
    }
    runs
}

/// `chars` without those marked in `strip`.
fn without(chars: &[char], strip: &[bool]) -> String {
    chars
        .iter()
        .zip(strip)
        .filter(|(_, &s)| !s)
        .map(|(c, _)| *c)
        .collect()
}

/// CommonMark backslash escapes: `\` before ASCII punctuation is dropped; before anything else
/// (`HKCU\Software`) or right after a drive letter (`C:\*.exe`) it is kept.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && !out.ends_with(':') {
            if let Some(&n) = chars.peek() {
                if n.is_ascii_punctuation() && n != '\\' {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn converts_blocks() {
        let md = "# Op **Glass**\n\nSome *wrapped*\nparagraph with [a link](http://x.y) and `cmd.exe /c`.\n\n## IOCs\n\n- item `one`\n- [x] item two\n  continued\n1. first\n\n| Type | Value |\n|------|-------|\n| IP | 10.0.0.1 |\n\n```\npowershell -enc AAAA\n```\n---\nsnake_case __init__.py C:\\*.exe HKCU\\Software\\Run \\*literal\\*\n";
        let (title, text) = markdown_to_text(md);
        assert_eq!(title.as_deref(), Some("Op Glass"));
        assert_eq!(
            text,
            "Op Glass\n\nSome wrapped paragraph with a link and cmd.exe /c.\n\nIOCs\n\nitem one\nitem two continued\nfirst\n\nType | Value\nIP | 10.0.0.1\n\npowershell -enc AAAA\n\nsnake_case __init__.py C:\\*.exe HKCU\\Software\\Run *literal*\n"
        );
    }

    #[test]
    fn front_matter_is_skipped() {
        let (title, text) = markdown_to_text(
            "---\ntitle: \"Blog post\"\ndate: 2026-01-01\n---\n\n## Intro\n\nText.\n",
        );
        assert_eq!(title.as_deref(), Some("Blog post"));
        assert_eq!(text, "Intro\n\nText.\n");
    }

    #[test]
    fn setext_headings() {
        let (title, text) = markdown_to_text("Title here\n==========\n\nBody.\n\nSub\n---\n");
        assert_eq!(title.as_deref(), Some("Title here"));
        assert_eq!(text, "Title here\n\nBody.\n\nSub\n\n");
    }

    /// The regexes the one-pass functions replace (`regex` `replace_all` can rescan the rest
    /// of a line for every match).
    fn by_regex(s: &str) -> String {
        let tag =
            Regex::new(r"</?(?:br|b|i|em|strong|u|sup|sub|span|kbd|code|p|div)\b[^>]*>|<!--.*?-->")
                .unwrap();
        let link = Regex::new(r"!?\[([^\]]*)\](?:\([^)\s]*(?:\s+[^)]*)?\)|\[[^\]]*\])").unwrap();
        let auto = Regex::new(r"<((?:https?|ftp|mailto):[^>\s]+|[^>\s@]+@[^>\s]+)>").unwrap();
        let s = tag.replace_all(s, "");
        let s = link.replace_all(&s, "$1");
        auto.replace_all(&s, "$1").into_owned()
    }

    /// The previous strip_emphasis pairing (quadratic: a closer searched the whole opener
    /// stack), over the same runs.
    fn emphasis_by_scan(s: &str) -> String {
        let chars: Vec<char> = s.chars().collect();
        let runs = emphasis_runs(&chars);
        let mut strip = vec![false; chars.len()];
        let mut stack: Vec<usize> = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            let len = run.end - run.start;
            if run.closes {
                if let Some(pos) = stack
                    .iter()
                    .rposition(|&o| runs[o].c == run.c && runs[o].end - runs[o].start == len)
                {
                    let o = stack[pos];
                    stack.truncate(pos);
                    strip[runs[o].start..runs[o].end].fill(true);
                    strip[run.start..run.end].fill(true);
                    continue;
                }
            }
            if run.opens {
                stack.push(r);
            }
        }
        without(&chars, &strip)
    }

    #[test]
    fn emphasis_runs_open_close_and_skip() {
        let chars: Vec<char> = "*a* __init__.py \\*x ~y~ ~~z~~ ****".chars().collect();
        let runs: Vec<_> = emphasis_runs(&chars)
            .iter()
            .map(|r| (r.start, r.end, r.c, r.opens, r.closes))
            .collect();
        assert_eq!(
            runs,
            [
                (0, 1, '*', true, false),
                (2, 3, '*', false, true),
                (4, 6, '_', true, false),
                (10, 12, '_', false, false),
                (24, 26, '~', true, false),
                (27, 29, '~', false, true),
            ]
        );
    }

    /// The previous code-span loop.
    fn code_spans_by_find(s: &str) -> Vec<(bool, String)> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('`') {
            let ticks = rest[open..].chars().take_while(|&c| c == '`').count();
            let delim = &rest[open..open + ticks];
            let after = &rest[open + ticks..];
            match after.find(delim) {
                Some(close) => {
                    parts.push((false, rest[..open].to_string()));
                    parts.push((true, after[..close].to_string()));
                    rest = &after[close + ticks..];
                }
                None => {
                    parts.push((false, rest[..open + ticks].to_string()));
                    rest = after;
                }
            }
        }
        parts.push((false, rest.to_string()));
        parts
    }

    fn old_inline(s: &str) -> String {
        let mut out = String::new();
        for (code, part) in code_spans_by_find(s) {
            if code {
                out.push_str(part.trim());
            } else {
                out.push_str(&unescape(&emphasis_by_scan(&by_regex(&part))));
            }
        }
        out.trim().to_string()
    }

    #[test]
    fn one_pass_functions_match_what_they_replace() {
        let fixed = [
            "a <b>bold</b> <!-- c --> d<br/>e <bx>f</bx> <b\u{e9}>g <B>h</B> <b_>",
            "<!-- open <span>x</span> <!-- a --> b",
            "[t](u) ![img](x y) [r][1] [a[b](c) [no] [x](unclosed !![z](w)",
            "<https://x.y/z> <a@b.c> <http:> <<m@n> <x y@z> <ftp:x> <https:>",
            "a `b` c ``d`e`` f `g ``` y `` z ```a``b```c`d`",
            "*a _b* c_ **a *b** c* ~~x~~ __y__ ***z*** __init__.py \\*x\\*",
        ];
        // Deterministic pseudo-random lines over the characters that matter.
        let alphabet: Vec<char> = "<>[]()!-@:/ab `*_~\\.hpstf\u{e9}".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = Vec::new();
        for _ in 0..3_000 {
            let len = (x % 40) as usize;
            let mut s = String::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            random.push(s);
        }
        let words = [
            "<b>",
            "<!--",
            "-->",
            "[a]",
            "(u)",
            "<http://x>",
            "<a@b>",
            "``",
            "**",
        ];
        for k in 0..2_000u64 {
            let mut s = String::new();
            for j in 0..6 {
                s.push_str(words[((k * 7 + j * 13 + k / 3) % words.len() as u64) as usize]);
                s.push(if (k + j) % 3 == 0 { ' ' } else { 'x' });
            }
            random.push(s);
        }
        for s in fixed.iter().map(|s| s.to_string()).chain(random) {
            assert_eq!(
                strip_autolinks(&strip_links(&strip_html_tags(&s))),
                by_regex(&s),
                "{s:?}"
            );
            assert_eq!(strip_emphasis(&s), emphasis_by_scan(&s), "{s:?}");
            assert_eq!(inline(&s), old_inline(&s), "{s:?}");
        }
    }

    #[test]
    fn linear_work() {
        use super::super::work::assert_linear;
        let run = |s: &str| markdown_to_text(s);
        // The issue's case: quadratic in the old strip_emphasis (240 KB took 1.1 s).
        assert_linear(
            "emphasis",
            5_000,
            |n| " *a".repeat(n) + &" a_".repeat(n),
            run,
        );
        assert_linear(
            "backticks",
            2_000,
            |n| {
                (1..=n)
                    .rev()
                    .map(|k| "`".repeat(k % 50 + 1) + "x")
                    .collect()
            },
            run,
        );
        assert_linear("comment and tags", 5_000, |n| "<b><!--".repeat(n), run);
        assert_linear("links", 5_000, |n| "[a](".repeat(n) + &"[b]".repeat(n), run);
        assert_linear("brackets", 5_000, |n| "[".repeat(n) + "]", run);
        assert_linear("autolinks", 5_000, |n| "<".repeat(n) + "a@b", run);
        assert_linear("blockquotes", 5_000, |n| ">".repeat(n) + " quote\n", run);
        assert_linear("lists", 2_000, |n| "- item *a\n  - sub _b\n".repeat(n), run);
        assert_linear("table", 2_000, |n| "|a|".repeat(n) + "\n|-|-|\n", run);
    }
}

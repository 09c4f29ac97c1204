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

use std::sync::LazyLock;

use regex::Regex;

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
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"!?\[([^\]]*)\](?:\([^)\s]*(?:\s+[^)]*)?\)|\[[^\]]*\])").expect("static regex")
});
static AUTOLINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<((?:https?|ftp|mailto):[^>\s]+|[^>\s@]+@[^>\s]+)>").expect("static regex")
});
static HTML_TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"</?(?:br|b|i|em|strong|u|sup|sub|span|kbd|code|p|div)\b[^>]*>|<!--.*?-->")
        .expect("static regex")
});

/// Converts Markdown to `(title, text)`; the text has one block per line.
pub fn markdown_to_text(md: &str) -> (Option<String>, String) {
    let mut out: Vec<String> = Vec::new();
    let mut para: Vec<String> = Vec::new();
    let mut first_h1: Option<String> = None;
    let mut first_heading: Option<String> = None;
    let mut fence: Option<String> = None;
    let lines: Vec<&str> = md.lines().collect();

    let flush = |para: &mut Vec<String>, out: &mut Vec<String>| {
        if !para.is_empty() {
            out.push(para.join(" "));
            para.clear();
        }
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
        i += 1;
        if let Some(f) = &fence {
            if trimmed.starts_with(f.as_str())
                && trimmed
                    .trim_start_matches(f.chars().next().unwrap_or('`'))
                    .trim()
                    .is_empty()
            {
                fence = None;
                out.push(String::new());
            } else if !trimmed.is_empty() {
                out.push(trimmed.to_string());
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            flush(&mut para, &mut out);
            let ch = trimmed.chars().next().unwrap_or('`');
            let n = trimmed.chars().take_while(|&c| c == ch).count();
            fence = Some(std::iter::repeat_n(ch, n).collect());
            continue;
        }
        if trimmed.is_empty() {
            flush(&mut para, &mut out);
            if out.last().is_some_and(|l| !l.is_empty()) {
                out.push(String::new());
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
            out.push(heading);
            out.push(String::new());
            continue;
        }
        if RULE.is_match(raw) {
            flush(&mut para, &mut out);
            continue;
        }
        if let Some(c) = ATX.captures(raw) {
            flush(&mut para, &mut out);
            let level = c.get(1).map_or(1, |m| m.as_str().len());
            let text = inline(c.get(2).map_or("", |m| m.as_str()));
            if !text.is_empty() {
                if level == 1 && first_h1.is_none() {
                    first_h1 = Some(text.clone());
                }
                first_heading.get_or_insert_with(|| text.clone());
                out.push(text);
                out.push(String::new());
            }
            continue;
        }
        if trimmed.starts_with('|')
            || (trimmed.contains('|') && lines.get(i).is_some_and(|n| TABLE_SEP.is_match(n)))
        {
            if TABLE_SEP.is_match(raw) {
                continue;
            }
            flush(&mut para, &mut out);
            let row = trimmed.strip_prefix('|').unwrap_or(trimmed);
            let row = row.strip_suffix('|').unwrap_or(row);
            let cells: Vec<String> = split_cells(row)
                .iter()
                .map(|c| inline(c.trim()))
                .filter(|c| !c.is_empty())
                .collect();
            if !cells.is_empty() {
                out.push(cells.join(" | "));
            }
            continue;
        }
        if TABLE_SEP.is_match(raw) {
            continue;
        }
        if let Some(c) = ITEM.captures(raw) {
            flush(&mut para, &mut out);
            para.push(inline(c.get(1).map_or("", |m| m.as_str())));
            continue;
        }
        // Indented code (4 spaces) outside a paragraph or list item: a line of its own.
        if para.is_empty() && (raw.starts_with("    ") || raw.starts_with('\t')) {
            out.push(trimmed.to_string());
            continue;
        }
        let text = trimmed.trim_start_matches('>').trim();
        if !text.is_empty() {
            para.push(inline(text));
        }
    }
    flush(&mut para, &mut out);
    let mut text = out.join("\n");
    text.push('\n');
    (first_h1.or(front_title).or(first_heading), text)
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
    // Alternate between prose and code spans (single or double backticks).
    let mut rest = s;
    while let Some(open) = rest.find('`') {
        let ticks = rest[open..].chars().take_while(|&c| c == '`').count();
        let delim = &rest[open..open + ticks];
        let after = &rest[open + ticks..];
        match after.find(delim) {
            Some(close) => {
                out.push_str(&prose(&rest[..open]));
                out.push_str(after[..close].trim());
                rest = &after[close + ticks..];
            }
            None => {
                out.push_str(&prose(&rest[..open + ticks]));
                rest = after;
            }
        }
    }
    out.push_str(&prose(rest));
    out.trim().to_string()
}

fn prose(s: &str) -> String {
    let s = HTML_TAG.replace_all(s, "");
    let s = LINK.replace_all(&s, "$1");
    let s = AUTOLINK.replace_all(&s, "$1");
    let s = strip_emphasis(&s);
    unescape(&s)
}

/// Removes `*`, `_` and `~~` runs used as emphasis. A run can open (followed by a non-space,
/// not preceded by a letter or digit) or close (preceded by a non-space, not followed by a letter,
/// a digit or `.` + letter/digit, so `__init__.py` stays); only matched opener/closer pairs of the
/// same character and length are removed.
fn strip_emphasis(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    // (start, end, char, opens, closes)
    let mut runs: Vec<(usize, usize, char, bool, bool)> = Vec::new();
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
            let opens = !space(next) && !word(prev);
            let closes = !space(prev) && !word(next) && !dotted;
            if j - i <= 3 && (c != '~' || j - i == 2) {
                runs.push((i, j, c, opens, closes));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    let mut strip = vec![false; chars.len()];
    let mut stack: Vec<usize> = Vec::new();
    for (r, &(_, _, c, opens, closes)) in runs.iter().enumerate() {
        let len = runs[r].1 - runs[r].0;
        if closes {
            if let Some(pos) = stack
                .iter()
                .rposition(|&o| runs[o].2 == c && runs[o].1 - runs[o].0 == len)
            {
                let o = stack[pos];
                stack.truncate(pos);
                strip[runs[o].0..runs[o].1].fill(true);
                strip[runs[r].0..runs[r].1].fill(true);
                continue;
            }
        }
        if opens {
            stack.push(r);
        }
    }
    chars
        .iter()
        .zip(&strip)
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
}

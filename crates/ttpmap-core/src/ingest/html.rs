//! HTML to plain text lines (with the `scraper` crate).
//!
//! Owns [`html_to_text`] and [`convert`]. Dropped entirely: `head`, `script`, `style`, `nav`,
//! `header` (except one inside `article`/`main`, where blogs put the post title), `footer`,
//! `aside`, `noscript`, `svg`, `form`, `template`, `iframe`, `button`, `select`, `canvas`,
//! `object`, and elements with the `hidden` attribute. Block elements end lines; each list item
//! and each table row is a line of its own (cells joined with ` | `); `pre` keeps its line
//! breaks; inline text is joined with collapsed whitespace. The title is `<title>`, else the
//! first `<h1>`.
//!
//! Hostile input: nothing here recurses on the input's depth (the tree is walked with an
//! explicit stack), and before parsing, [`cap_depth`] (a linear pre-pass) bounds what the
//! HTML parser is given: elements nested deeper than [`MAX_HTML_DEPTH`], unclosed formatting
//! elements past [`MAX_OPEN_FORMATTING`] and attributes past [`MAX_ATTRIBUTES`] on one tag are
//! left out (their text is kept) with a warning. html5ever's tree builder does work
//! proportional to the depth of open elements for each tag (scope checks) and to the number of
//! attributes for each attribute (duplicate check), so without the cap 100k nested `<div>`s cost
//! seconds; with it, parsing and the walk are linear in the input. Input within the caps is
//! parsed unchanged.

use scraper::node::Node;
use scraper::{ElementRef, Html, Selector};

use crate::types::Block;

/// scraper's node reference (ego-tree's `NodeRef<'a, Node>`), named without depending on
/// ego-tree.
type NodeRef<'a> = <ElementRef<'a> as std::ops::Deref>::Target;

const DROPPED: &[&str] = &[
    "head", "script", "style", "nav", "footer", "aside", "noscript", "svg", "form", "template",
    "iframe", "button", "select", "canvas", "object", "embed", "math", "dialog",
];

const BLOCKS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "ul",
    "header",
    "center",
    "menu",
    "tr",
];

/// Deepest element nesting the HTML parser is given; deeper opening tags are left out (their
/// text is kept). Real pages nest a few dozen levels.
pub const MAX_HTML_DEPTH: usize = 512;
/// Most formatting elements (`b`, `i`, `a`, `font`, ...) left open at once; further opening
/// formatting tags are left out (they carry no text of their own).
pub const MAX_OPEN_FORMATTING: usize = 256;
/// Most attributes kept on one tag; further attributes are left out.
pub const MAX_ATTRIBUTES: usize = 256;

/// The result of [`convert`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HtmlText {
    /// `<title>`, else the first `<h1>`.
    pub title: Option<String>,
    /// One block per line.
    pub text: String,
    /// The kind of each line of `text`.
    pub blocks: Vec<Block>,
    /// What was left out by [`cap_depth`] (empty for ordinary pages).
    pub warnings: Vec<String>,
}

/// Converts an HTML document to `(title, text)`; the text has one block per line. See
/// [`convert`] for the warnings.
pub fn html_to_text(html: &str) -> (Option<String>, String) {
    let t = convert(html);
    (t.title, t.text)
}

/// Converts an HTML document to its title, text and warnings (see the module documentation).
pub fn convert(html: &str) -> HtmlText {
    let capped = cap_depth(html);
    let (src, warnings) = match &capped {
        Some(c) => (c.html.as_str(), c.warnings()),
        None => (html, Vec::new()),
    };
    let doc = Html::parse_document(src);
    super::work::add(src.len() as u64);
    #[cfg(test)]
    super::work::add(depth_sum(&doc));
    let title = first_text(&doc, "title").or_else(|| first_text(&doc, "h1"));
    let (text, blocks) = walk(doc.root_element());
    HtmlText {
        title,
        text,
        blocks,
        warnings,
    }
}

/// The work model of html5ever's tree builder and tokenizer: each node costs its depth (scope
/// checks walk the stack of open elements) and each element the square of its attribute count
/// (every attribute is checked against the previous ones for duplicates).
#[cfg(test)]
fn depth_sum(doc: &Html) -> u64 {
    let mut sum = 0u64;
    let mut stack = vec![(doc.tree.root(), 0u64)];
    while let Some((n, d)) = stack.pop() {
        sum += d;
        if let Node::Element(e) = n.value() {
            let a = e.attrs().count() as u64;
            sum += a * a;
        }
        for c in n.children() {
            stack.push((c, d + 1));
        }
    }
    sum
}

/// Deepest element of a parsed document (tests of the cap).
#[cfg(test)]
fn max_depth(doc: &Html) -> usize {
    let mut max = 0;
    let mut stack = vec![(doc.tree.root(), 0usize)];
    while let Some((n, d)) = stack.pop() {
        max = max.max(d);
        for c in n.children() {
            stack.push((c, d + 1));
        }
    }
    max
}

fn first_text(doc: &Html, tag: &str) -> Option<String> {
    let sel = Selector::parse(tag).ok()?;
    // Each candidate's subtree is read once; nested candidates re-read their inner ones,
    // which the depth cap bounds.
    doc.select(&sel)
        .map(|e| {
            #[cfg(test)]
            super::work::add(e.descendants().count() as u64);
            collapse(&e.text().collect::<String>())
        })
        .find(|t| !t.is_empty())
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Default)]
struct Writer {
    out: String,
    line: String,
    /// The kind of each line written to `out`.
    kinds: Vec<Block>,
    /// The kind of the line being collected (that of the innermost heading or list item).
    kind: Block,
}

impl Writer {
    fn inline(&mut self, text: &str) {
        // Collapse whitespace, keeping one space between words across text nodes.
        let starts_ws = text.starts_with(char::is_whitespace);
        let ends_ws = text.ends_with(char::is_whitespace);
        let words = collapse(text);
        if words.is_empty() {
            if !text.is_empty() && !self.line.is_empty() && !self.line.ends_with(' ') {
                self.line.push(' ');
            }
            return;
        }
        if starts_ws && !self.line.is_empty() && !self.line.ends_with(' ') {
            self.line.push(' ');
        }
        self.line.push_str(&words);
        if ends_ws {
            self.line.push(' ');
        }
    }

    fn raw_line(&mut self, text: &str, kind: Block) {
        self.end_line();
        self.out.push_str(text);
        self.out.push('\n');
        self.kinds.push(kind);
    }

    fn end_line(&mut self) {
        let l = self.line.trim();
        if !l.is_empty() {
            self.out.push_str(l);
            self.out.push('\n');
            self.kinds.push(self.kind);
        }
        self.line.clear();
    }
}

/// One step of the tree walk. `N` is scraper's node reference; the `bool` is "inside an
/// `article` or `main`".
enum Task<N> {
    /// Visit this node.
    Node(N, bool),
    /// Visit this node and then its following siblings.
    Seq(Option<N>, bool),
    /// End the line of a block element, then go back to this line kind.
    EndBlock(Block),
    /// Visit the `td`/`th` cells among this node and its following siblings.
    Cells(Option<N>, bool),
    /// Start collecting a cell's text.
    BeginCell,
    /// Finish a cell: its text collapsed to one line.
    EndCell,
    /// Write a table row from its collected cells.
    FinishRow,
}

/// Walks the tree from `root` with an explicit stack (no recursion, whatever the depth);
/// returns the text and the kind of each of its lines.
fn walk(root: ElementRef<'_>) -> (String, Vec<Block>) {
    // writers[0] is the document; a table cell collects its text in a writer of its own.
    let mut writers = vec![Writer::default()];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut tasks = vec![Task::Node(*root, false)];
    while let Some(task) = tasks.pop() {
        super::work::add(1);
        let Some(w) = writers.last_mut() else {
            break;
        };
        match task {
            Task::EndBlock(kind) => {
                w.end_line();
                w.kind = kind;
            }
            Task::BeginCell => writers.push(Writer::default()),
            Task::EndCell => {
                if writers.len() > 1 {
                    if let Some(mut cw) = writers.pop() {
                        cw.end_line();
                        let cell = collapse(&cw.out);
                        if let (Some(row), false) = (rows.last_mut(), cell.is_empty()) {
                            row.push(cell);
                        }
                    }
                }
            }
            Task::FinishRow => {
                let cells = rows.pop().unwrap_or_default();
                if !cells.is_empty() {
                    w.raw_line(&cells.join(" | "), Block::TableRow);
                }
            }
            Task::Cells(mut next, in_article) => {
                while let Some(n) = next {
                    let cell = ElementRef::wrap(n)
                        .is_some_and(|c| matches!(c.value().name(), "td" | "th"));
                    if cell {
                        tasks.push(Task::Cells(n.next_sibling(), in_article));
                        tasks.push(Task::EndCell);
                        tasks.push(Task::Seq(n.first_child(), in_article));
                        tasks.push(Task::BeginCell);
                        break;
                    }
                    next = n.next_sibling();
                }
            }
            Task::Seq(None, _) => {}
            Task::Seq(Some(n), in_article) => {
                tasks.push(Task::Seq(n.next_sibling(), in_article));
                tasks.push(Task::Node(n, in_article));
            }
            Task::Node(n, in_article) => match n.value() {
                Node::Text(t) => w.inline(t),
                Node::Element(_) => {
                    if let Some(el) = ElementRef::wrap(n) {
                        enter(el, w, &mut tasks, &mut rows, in_article);
                    }
                }
                _ => {}
            },
        }
    }
    let mut w = writers.swap_remove(0);
    w.end_line();
    (w.out, w.kinds)
}

/// Handles one element: writes what needs no children and pushes the tasks for the rest.
fn enter<'a>(
    el: ElementRef<'a>,
    w: &mut Writer,
    tasks: &mut Vec<Task<NodeRef<'a>>>,
    rows: &mut Vec<Vec<String>>,
    in_article: bool,
) {
    let name = el.value().name();
    if DROPPED.contains(&name) || el.value().attr("hidden").is_some() {
        return;
    }
    if name == "header" && !in_article {
        return;
    }
    let in_article = in_article || name == "article" || name == "main";
    match name {
        "br" => w.end_line(),
        "tr" => {
            rows.push(Vec::new());
            tasks.push(Task::FinishRow);
            tasks.push(Task::Cells(el.first_child(), in_article));
        }
        "pre" => {
            w.end_line();
            let text: String = el.text().collect();
            for line in text.lines() {
                w.raw_line(line, Block::Code);
            }
        }
        "img" => {
            if let Some(alt) = el.value().attr("alt") {
                w.inline(alt);
            }
        }
        _ => {
            if BLOCKS.contains(&name) {
                w.end_line();
                tasks.push(Task::EndBlock(w.kind));
                match name {
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => w.kind = Block::Heading,
                    "li" | "dt" | "dd" => w.kind = Block::ListItem,
                    _ => {}
                }
            }
            tasks.push(Task::Seq(el.first_child(), in_article));
        }
    }
}

/// What [`cap_depth`] left out, and the HTML without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CappedHtml {
    /// The input without the left-out tags and attributes.
    pub html: String,
    /// Opening tags (and their closing tags) nested deeper than [`MAX_HTML_DEPTH`].
    pub deep_tags: usize,
    /// Opening formatting tags past [`MAX_OPEN_FORMATTING`] left open.
    pub formatting_tags: usize,
    /// Attributes past [`MAX_ATTRIBUTES`] on one tag.
    pub attributes: usize,
}

impl CappedHtml {
    /// One warning per kind of thing left out.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.deep_tags > 0 {
            w.push(format!(
                "HTML nested deeper than {MAX_HTML_DEPTH} elements: {} tags past that depth were left out (their text is kept)",
                self.deep_tags
            ));
        }
        if self.formatting_tags > 0 {
            w.push(format!(
                "HTML with more than {MAX_OPEN_FORMATTING} formatting elements left open: {} further formatting tags were left out (their text is kept)",
                self.formatting_tags
            ));
        }
        if self.attributes > 0 {
            w.push(format!(
                "HTML tags with more than {MAX_ATTRIBUTES} attributes: {} further attributes were left out",
                self.attributes
            ));
        }
        w
    }
}

/// Linear pre-pass bounding the nesting the HTML parser sees: `None` when the input is within
/// [`MAX_HTML_DEPTH`], [`MAX_OPEN_FORMATTING`] and [`MAX_ATTRIBUTES`] (it is parsed as is),
/// else the input with the excess tags (opening and matching closing tags, replaced by a space
/// for block-level elements so words stay apart) and attributes left out.
///
/// It tokenizes tags, comments and raw-text elements as HTML does and simulates the parser's
/// stack of open elements closely enough that the real depth stays within a small multiple of
/// the cap: implied closes (`p`, `li`, `dd`/`dt`, table parts, headings, `option`), scope
/// boundaries, end tags that do not match across special elements, foreign content (`svg`,
/// `math`) and its integration points. Every step is O(1) amortised.
pub fn cap_depth(html: &str) -> Option<CappedHtml> {
    let b = html.as_bytes();
    let mut sim = Sim::default();
    // (start, end, replacement) of the byte ranges left out, in order.
    let mut cuts: Vec<(usize, usize, &'static str)> = Vec::new();
    let (mut deep, mut formatting, mut attributes) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while let Some(off) = b[i.min(b.len())..].iter().position(|&c| c == b'<') {
        let lt = i + off;
        match b.get(lt + 1) {
            Some(b'!') => i = skip_declaration(b, lt),
            Some(b'?') => i = after_gt(b, lt + 2),
            Some(b'/') => match b.get(lt + 2) {
                Some(c) if c.is_ascii_alphabetic() => {
                    let Some(tag) = read_tag(b, lt + 2) else {
                        break; // EOF inside a tag: the parser drops it
                    };
                    let (cut, special) = sim.end_tag(&tag.name);
                    if cut {
                        cuts.push((lt, tag.end, if special { " " } else { "" }));
                    } else if let Some(a) = tag.excess_attributes {
                        cuts.push((a, tag.gt, ""));
                        attributes += tag.attributes - MAX_ATTRIBUTES;
                    }
                    i = tag.end;
                }
                Some(b'>') => i = lt + 3,
                Some(_) => i = after_gt(b, lt + 2),
                None => break,
            },
            Some(c) if c.is_ascii_alphabetic() => {
                let Some(tag) = read_tag(b, lt + 1) else {
                    break;
                };
                let open = sim.start_tag(&tag.name, tag.self_closing);
                i = tag.end;
                match open {
                    Open::Dropped {
                        formatting: f,
                        special,
                    } => {
                        cuts.push((lt, tag.end, if special { " " } else { "" }));
                        if f {
                            formatting += 1;
                        } else {
                            deep += 1;
                        }
                    }
                    Open::Kept | Open::RawText | Open::PlainText => {
                        if let Some(a) = tag.excess_attributes {
                            cuts.push((a, tag.gt, ""));
                            attributes += tag.attributes - MAX_ATTRIBUTES;
                        }
                        if open == Open::RawText {
                            i = raw_text_end(b, i, tag.name.as_bytes());
                        } else if open == Open::PlainText {
                            i = b.len();
                        }
                    }
                }
            }
            _ => i = lt + 1,
        }
    }
    super::work::add(b.len() as u64);
    if cuts.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(html.len());
    let mut last = 0;
    for (s, e, r) in cuts {
        // Cuts are on ASCII bytes (`<`, `>`, whitespace before an attribute), so on char
        // boundaries; `get` keeps that from ever panicking.
        out.push_str(html.get(last..s).unwrap_or_default());
        out.push_str(r);
        last = e;
    }
    out.push_str(html.get(last..).unwrap_or_default());
    Some(CappedHtml {
        html: out,
        deep_tags: deep,
        formatting_tags: formatting,
        attributes,
    })
}

/// Index after the next `>` at or after `from` (or the end: the parser reads to EOF).
fn after_gt(b: &[u8], from: usize) -> usize {
    b.get(from..)
        .and_then(|r| r.iter().position(|&c| c == b'>'))
        .map_or(b.len(), |p| from + p + 1)
}

/// `<!`: a comment (`<!--` to `-->` or `--!>`; `<!-->` and `<!--->` are empty comments), else a
/// doctype, CDATA section or bogus comment to the next `>`. Returns the index after it.
fn skip_declaration(b: &[u8], lt: usize) -> usize {
    let rest = &b[lt..];
    if !rest.starts_with(b"<!--") {
        return after_gt(b, lt + 2);
    }
    let body = lt + 4;
    if b[body..].starts_with(b">") {
        return body + 1;
    }
    if b[body..].starts_with(b"->") {
        return body + 2;
    }
    let mut p = body;
    while p + 1 < b.len() {
        if b[p] == b'-' && b[p + 1] == b'-' {
            if b.get(p + 2) == Some(&b'>') {
                return p + 3;
            }
            if b.get(p + 2) == Some(&b'!') && b.get(p + 3) == Some(&b'>') {
                return p + 4;
            }
        }
        p += 1;
    }
    b.len()
}

/// Start of the end tag `</name` (ASCII case-insensitive, followed by whitespace, `/` or
/// `>`) that ends a raw-text element, or the end of the input.
fn raw_text_end(b: &[u8], from: usize, name: &[u8]) -> usize {
    let mut p = from;
    while p + 1 < b.len() {
        if b[p] == b'<' && b[p + 1] == b'/' {
            let n = p + 2;
            let matches = b
                .get(n..n + name.len())
                .is_some_and(|x| x.eq_ignore_ascii_case(name))
                && b.get(n + name.len()).is_some_and(|c| {
                    matches!(c, b'\t' | b'\n' | b'\x0C' | b'\r' | b' ' | b'/' | b'>')
                });
            if matches {
                return p;
            }
        }
        p += 1;
    }
    b.len()
}

/// A tag as the tokenizer reads it.
struct Tag {
    /// ASCII-lower-cased name.
    name: String,
    self_closing: bool,
    /// Number of attributes.
    attributes: usize,
    /// Where the first attribute past [`MAX_ATTRIBUTES`] starts.
    excess_attributes: Option<usize>,
    /// Index of the closing `>`.
    gt: usize,
    /// Index after the tag.
    end: usize,
}

/// Reads a tag whose name starts at `start` (HTML tokenizer states for tag names and
/// attributes); `None` at EOF inside the tag.
fn read_tag(b: &[u8], start: usize) -> Option<Tag> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Name,
        BeforeAttr,
        AttrName,
        AfterAttrName,
        BeforeValue,
        Double,
        Single,
        Unquoted,
        AfterQuoted,
        SelfClosing,
    }
    let ws = |c: u8| matches!(c, b'\t' | b'\n' | b'\x0C' | b'\r' | b' ');
    let mut st = St::Name;
    let mut name_end = start;
    let mut attributes = 0usize;
    let mut excess = None;
    let mut p = start;
    while p < b.len() {
        let c = b[p];
        let mut new_attr = false;
        match st {
            St::Name => {
                if ws(c) {
                    st = St::BeforeAttr;
                } else if c == b'/' {
                    st = St::SelfClosing;
                } else if c == b'>' {
                    name_end = p;
                } else {
                    name_end = p + 1;
                }
            }
            St::BeforeAttr => {
                if c == b'/' {
                    st = St::SelfClosing;
                } else if c != b'>' && !ws(c) {
                    st = St::AttrName;
                    new_attr = true;
                }
            }
            St::AttrName => {
                if ws(c) {
                    st = St::AfterAttrName;
                } else if c == b'/' {
                    st = St::SelfClosing;
                } else if c == b'=' {
                    st = St::BeforeValue;
                }
            }
            St::AfterAttrName => {
                if c == b'/' {
                    st = St::SelfClosing;
                } else if c == b'=' {
                    st = St::BeforeValue;
                } else if c != b'>' && !ws(c) {
                    st = St::AttrName;
                    new_attr = true;
                }
            }
            St::BeforeValue => {
                if c == b'"' {
                    st = St::Double;
                } else if c == b'\'' {
                    st = St::Single;
                } else if c != b'>' && !ws(c) {
                    st = St::Unquoted;
                }
            }
            St::Double => {
                if c == b'"' {
                    st = St::AfterQuoted;
                }
            }
            St::Single => {
                if c == b'\'' {
                    st = St::AfterQuoted;
                }
            }
            St::Unquoted => {
                if ws(c) {
                    st = St::BeforeAttr;
                }
            }
            St::AfterQuoted => {
                if ws(c) {
                    st = St::BeforeAttr;
                } else if c == b'/' {
                    st = St::SelfClosing;
                } else if c != b'>' {
                    st = St::AttrName;
                    new_attr = true;
                }
            }
            St::SelfClosing => {
                if c != b'>' {
                    st = St::BeforeAttr;
                    if !ws(c) {
                        st = St::AttrName;
                        new_attr = true;
                    }
                }
            }
        }
        if new_attr {
            attributes += 1;
            if attributes == MAX_ATTRIBUTES + 1 {
                excess = Some(p);
            }
        }
        if c == b'>' && !matches!(st, St::Double | St::Single) {
            let self_closing = st == St::SelfClosing;
            let name = String::from_utf8_lossy(&b[start..name_end]).to_ascii_lowercase();
            return Some(Tag {
                name,
                self_closing,
                attributes,
                excess_attributes: excess,
                gt: p,
                end: p + 1,
            });
        }
        p += 1;
    }
    None
}

/// What [`Sim::start_tag`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    /// Given to the parser.
    Kept,
    /// Given to the parser; its content up to its end tag is text.
    RawText,
    /// Given to the parser; the rest of the input is text (`plaintext`).
    PlainText,
    /// Left out.
    Dropped { formatting: bool, special: bool },
}

// Categories of element names (bit flags).
const SPECIAL: u32 = 1;
const SCOPE: u32 = 1 << 1;
const TABLE_SCOPE: u32 = 1 << 2;
const FOREIGN_ROOT: u32 = 1 << 3;
const INTEGRATION: u32 = 1 << 4;
const LI_STOP: u32 = 1 << 5;
const DD_STOP: u32 = 1 << 6;
const FORMATTING: u32 = 1 << 7;
const VOID: u32 = 1 << 8;
const RAW: u32 = 1 << 9;
const CLOSES_P: u32 = 1 << 10;
const HEADING: u32 = 1 << 11;
const BREAKOUT: u32 = 1 << 12;
const IGNORED: u32 = 1 << 13;
/// Categories with a stack of positions (index = bit number).
const TRACKED: [u32; 7] = [
    SPECIAL,
    SCOPE,
    TABLE_SCOPE,
    FOREIGN_ROOT,
    INTEGRATION,
    LI_STOP,
    DD_STOP,
];

// The tree builder's tag sets (html5ever `tree_builder/tag_sets.rs`, WHATWG HTML 13.2.4).
const SPECIAL_NAMES: &[&str] = &[
    "address",
    "applet",
    "area",
    "article",
    "aside",
    "base",
    "basefont",
    "bgsound",
    "blockquote",
    "body",
    "br",
    "button",
    "caption",
    "center",
    "col",
    "colgroup",
    "dd",
    "details",
    "dir",
    "div",
    "dl",
    "dt",
    "embed",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frame",
    "frameset",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "iframe",
    "img",
    "input",
    "isindex",
    "li",
    "link",
    "listing",
    "main",
    "marquee",
    "menu",
    "meta",
    "nav",
    "noembed",
    "noframes",
    "noscript",
    "object",
    "ol",
    "p",
    "param",
    "plaintext",
    "pre",
    "script",
    "search",
    "section",
    "select",
    "source",
    "style",
    "summary",
    "table",
    "tbody",
    "td",
    "template",
    "textarea",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "track",
    "ul",
    "wbr",
    "xmp",
    "foreignobject",
    "desc",
    "mi",
    "mo",
    "mn",
    "ms",
    "mtext",
    "annotation-xml",
];
const SCOPE_NAMES: &[&str] = &[
    "applet",
    "caption",
    "html",
    "table",
    "td",
    "th",
    "marquee",
    "object",
    "select",
    "template",
    "foreignobject",
    "desc",
    "title",
    "mi",
    "mo",
    "mn",
    "ms",
    "mtext",
    "annotation-xml",
];
const FORMATTING_NAMES: &[&str] = &[
    "a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u",
];
const VOID_NAMES: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
    "input", "keygen", "link", "meta", "param", "source", "track", "wbr",
];
const RAW_NAMES: &[&str] = &[
    "script",
    "style",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
    "textarea",
    "title",
    "plaintext",
];
const CLOSES_P_NAMES: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "header",
    "hgroup",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "search",
    "section",
    "summary",
    "ul",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "listing",
    "form",
    "hr",
    "li",
    "dd",
    "dt",
    "plaintext",
    "xmp",
];
const BREAKOUT_NAMES: &[&str] = &[
    "b",
    "big",
    "blockquote",
    "body",
    "br",
    "center",
    "code",
    "dd",
    "div",
    "dl",
    "dt",
    "em",
    "embed",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "hr",
    "i",
    "img",
    "li",
    "listing",
    "menu",
    "meta",
    "nobr",
    "ol",
    "p",
    "pre",
    "ruby",
    "s",
    "small",
    "span",
    "strong",
    "strike",
    "sub",
    "sup",
    "table",
    "tt",
    "u",
    "ul",
    "var",
];

fn categories(name: &str) -> u32 {
    let has = |set: &[&str]| set.contains(&name);
    let mut f = 0;
    if has(SPECIAL_NAMES) {
        f |= SPECIAL;
        if !matches!(name, "address" | "div" | "p" | "li") {
            f |= LI_STOP;
        }
        if !matches!(name, "address" | "div" | "p" | "dd" | "dt") {
            f |= DD_STOP;
        }
    }
    if has(SCOPE_NAMES) {
        f |= SCOPE;
    }
    if matches!(name, "html" | "table" | "template") {
        f |= TABLE_SCOPE;
    }
    if matches!(name, "svg" | "math") {
        f |= FOREIGN_ROOT;
    }
    if matches!(
        name,
        "foreignobject" | "desc" | "title" | "mi" | "mo" | "mn" | "ms" | "mtext" | "annotation-xml"
    ) {
        f |= INTEGRATION;
    }
    if has(FORMATTING_NAMES) {
        f |= FORMATTING;
    }
    if has(VOID_NAMES) {
        f |= VOID;
    }
    if has(RAW_NAMES) {
        f |= RAW;
    }
    if has(CLOSES_P_NAMES) {
        f |= CLOSES_P;
    }
    if matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6") {
        f |= HEADING;
    }
    if has(BREAKOUT_NAMES) {
        f |= BREAKOUT;
    }
    if matches!(name, "html" | "body" | "head" | "frameset") {
        f |= IGNORED;
    }
    f
}

/// The simulated stack of open elements. Names are interned; for each name and each tracked
/// category the stack positions holding it are kept in order, so "is there a `p` above the
/// last scope boundary" is O(1) and popping is amortised O(1).
#[derive(Default)]
struct Sim {
    ids: std::collections::HashMap<String, usize>,
    flags: Vec<u32>,
    /// Per name id: stack positions.
    pos: Vec<Vec<usize>>,
    /// Per tracked category: stack positions.
    cat: [Vec<usize>; 7],
    /// (name id, left out).
    stack: Vec<(usize, bool)>,
    /// Per name id: formatting elements opened and not closed by their end tag.
    formatting_open: Vec<usize>,
    formatting_total: usize,
}

impl Sim {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.flags.len();
        self.ids.insert(name.to_string(), id);
        self.flags.push(categories(name));
        self.pos.push(Vec::new());
        self.formatting_open.push(0);
        id
    }

    fn last(&self, id: usize) -> Option<usize> {
        self.pos[id].last().copied()
    }

    fn last_named(&mut self, name: &str) -> Option<usize> {
        let id = self.id(name);
        self.last(id)
    }

    fn last_cat(&self, c: u32) -> Option<usize> {
        let k = c.trailing_zeros() as usize;
        self.cat[k].last().copied()
    }

    fn top_is(&self, f: impl Fn(usize) -> bool) -> bool {
        self.stack.last().is_some_and(|&(id, _)| f(id))
    }

    fn in_foreign(&self) -> bool {
        self.last_cat(FOREIGN_ROOT) > self.last_cat(INTEGRATION)
    }

    fn push(&mut self, id: usize, dropped: bool) {
        let at = self.stack.len();
        self.stack.push((id, dropped));
        self.pos[id].push(at);
        let f = self.flags[id];
        for (k, c) in TRACKED.iter().enumerate() {
            if f & c != 0 {
                self.cat[k].push(at);
            }
        }
    }

    /// Pops elements until the stack has `len` entries.
    fn truncate(&mut self, len: usize) {
        while self.stack.len() > len {
            let Some((id, _)) = self.stack.pop() else {
                break;
            };
            self.pos[id].pop();
            let f = self.flags[id];
            for (k, c) in TRACKED.iter().enumerate() {
                if f & c != 0 {
                    self.cat[k].pop();
                }
            }
        }
    }

    /// Pops through the element at `at` when it lies above `bound`.
    fn close_above(&mut self, at: Option<usize>, bound: Option<usize>) {
        if let Some(t) = at {
            if at > bound {
                self.truncate(t);
            }
        }
    }

    fn close_p(&mut self) {
        let p = self.last_named("p");
        let button = self.last_named("button");
        let bound = self.last_cat(SCOPE).max(button);
        self.close_above(p, bound);
    }

    fn start_tag(&mut self, name: &str, self_closing: bool) -> Open {
        let id = self.id(name);
        let f = self.flags[id];
        let foreign = self.in_foreign();
        if f & IGNORED != 0 {
            return Open::Kept;
        }
        if f & VOID != 0 {
            if name == "hr" {
                self.close_p();
            }
            return Open::Kept;
        }
        if foreign {
            if f & BREAKOUT != 0 {
                let root = self.last_cat(FOREIGN_ROOT);
                self.close_above(root, None);
            } else if self_closing {
                return Open::Kept;
            }
        }
        let foreign = self.in_foreign();
        if f & RAW != 0 && !foreign {
            if f & CLOSES_P != 0 {
                self.close_p();
            }
            return if name == "plaintext" {
                Open::PlainText
            } else {
                Open::RawText
            };
        }
        if f & CLOSES_P != 0 {
            self.close_p();
        }
        if f & HEADING != 0 && self.top_is(|t| self.flags[t] & HEADING != 0) {
            let len = self.stack.len() - 1;
            self.truncate(len);
        }
        match name {
            "li" => {
                let li = self.last(id);
                let stop = self.last_cat(LI_STOP);
                self.close_above(li, stop);
            }
            "dd" | "dt" => {
                let t = self.last_named("dd").max(self.last_named("dt"));
                let stop = self.last_cat(DD_STOP);
                self.close_above(t, stop);
            }
            "td" | "th" => {
                let t = self.last_named("td").max(self.last_named("th"));
                let stop = self.last_cat(TABLE_SCOPE);
                self.close_above(t, stop);
            }
            "tr" | "tbody" | "thead" | "tfoot" => {
                let mut t = self.last_named("tr");
                if name != "tr" {
                    t = t
                        .max(self.last_named("tbody"))
                        .max(self.last_named("thead"))
                        .max(self.last_named("tfoot"));
                }
                let stop = self.last_cat(TABLE_SCOPE);
                self.close_above(t, stop);
            }
            "option" | "optgroup" => {
                let option = self.id("option");
                if self.top_is(|t| t == option) {
                    let len = self.stack.len() - 1;
                    self.truncate(len);
                }
                let optgroup = self.id("optgroup");
                if name == "optgroup" && self.top_is(|t| t == optgroup) {
                    let len = self.stack.len() - 1;
                    self.truncate(len);
                }
            }
            "a" | "nobr" => {
                // The adoption agency closes an open `a` (or `nobr`) first.
                let t = self.last(id);
                if t.is_some() && t > self.last_cat(SPECIAL) {
                    self.close_above(t, None);
                    if self.formatting_open[id] > 0 {
                        self.formatting_open[id] -= 1;
                        self.formatting_total -= 1;
                    }
                }
            }
            "table" => {
                let t = self.last(id);
                let cell = self
                    .last_named("td")
                    .max(self.last_named("th"))
                    .max(self.last_named("caption"));
                self.close_above(t, cell);
            }
            _ => {}
        }
        let formatting = f & FORMATTING != 0;
        let dropped = self.stack.len() >= MAX_HTML_DEPTH
            || (formatting && self.formatting_total >= MAX_OPEN_FORMATTING);
        if formatting && !dropped {
            self.formatting_open[id] += 1;
            self.formatting_total += 1;
        }
        self.push(id, dropped);
        if dropped {
            Open::Dropped {
                formatting: formatting && self.stack.len() <= MAX_HTML_DEPTH,
                special: f & SPECIAL != 0,
            }
        } else {
            Open::Kept
        }
    }

    /// Returns (the end tag closes a left-out element, that element is special).
    fn end_tag(&mut self, name: &str) -> (bool, bool) {
        let id = self.id(name);
        let f = self.flags[id];
        let scope = self.last_cat(SCOPE);
        let at = |t: Option<usize>, bound: Option<usize>| t.filter(|_| t > bound);
        let target = if f & IGNORED != 0 || name == "br" {
            None
        } else if name == "p" {
            let button = self.last_named("button");
            at(self.last(id), scope.max(button))
        } else if name == "li" {
            let lists = self.last_named("ul").max(self.last_named("ol"));
            at(self.last(id), scope.max(lists))
        } else if f & HEADING != 0 {
            let mut t = None;
            for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
                t = t.max(self.last_named(h));
            }
            at(t, scope)
        } else if f & FORMATTING != 0 {
            if self.formatting_open[id] > 0 {
                self.formatting_open[id] -= 1;
                self.formatting_total -= 1;
            }
            at(self.last(id), self.last_cat(SPECIAL))
        } else if f & (TABLE_SCOPE | SCOPE) != 0 {
            self.last(id)
        } else if matches!(
            name,
            "tbody" | "thead" | "tfoot" | "tr" | "td" | "th" | "caption" | "colgroup"
        ) {
            at(self.last(id), self.last_cat(TABLE_SCOPE))
        } else if f & SPECIAL != 0 {
            at(self.last(id), scope)
        } else {
            at(self.last(id), self.last_cat(SPECIAL))
        };
        let Some(t) = target else {
            return (false, false);
        };
        let (tid, dropped) = self.stack[t];
        self.truncate(t);
        (dropped, self.flags[tid] & SPECIAL != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_content_and_drops_chrome() {
        let html = r#"<!doctype html><html><head><title>Report X</title><style>p{}</style></head>
<body><nav>Home | About</nav><header>Site banner</header>
<article><header><h1>Big <em>Title</em></h1></header>
<p>First   para with <a href="x">a link</a>.<br>Second line.</p>
<ul><li>one</li><li>two <b>bold</b></li></ul>
<table><tr><th>Type</th><th>Value</th></tr><tr><td>IP</td><td>10.0.0.1</td></tr></table>
<pre>cmd.exe /c whoami
net user</pre><script>alert(1)</script><div hidden>secret</div></article>
<footer>(c) 2026</footer><form>Search</form></body></html>"#;
        let (title, text) = html_to_text(html);
        assert_eq!(title.as_deref(), Some("Report X"));
        assert_eq!(
            text,
            "Big Title\nFirst para with a link.\nSecond line.\none\ntwo bold\nType | Value\nIP | 10.0.0.1\ncmd.exe /c whoami\nnet user\n"
        );
    }

    #[test]
    fn title_falls_back_to_h1() {
        let (title, _) = html_to_text("<h1> The  H1 </h1><p>x</p>");
        assert_eq!(title.as_deref(), Some("The H1"));
    }

    fn nested(open: &str, close: &str, n: usize, text: &str) -> String {
        format!(
            "<html><body>{}{text}{}</body></html>",
            open.repeat(n),
            close.repeat(n)
        )
    }

    #[test]
    fn deep_nesting_keeps_the_text_and_warns() {
        let t = convert(&nested("<div>", "</div>", 100_000, "deep words"));
        assert_eq!(t.text, "deep words\n");
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(
            t.warnings[0].contains("nested deeper than 512 elements"),
            "{:?}",
            t.warnings
        );
        let t = convert(&nested("<span>", "</span>", 7_000, "x y"));
        assert_eq!(t.text, "x y\n");
    }

    #[test]
    fn walk_is_iterative() {
        // Parsed without the cap (nested spans are cheap for the parser): the walk must not
        // need stack in proportion to the depth.
        let html = nested("<span>", "</span>", 50_000, "inner text");
        let text = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let doc = Html::parse_document(&html);
                assert!(max_depth(&doc) > 50_000);
                walk(doc.root_element()).0
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        assert_eq!(text, "inner text\n");
    }

    #[test]
    fn ordinary_pages_are_not_rewritten() {
        let page = r#"<!doctype html><html><head><title>T</title><script>if (a<b) { x = "</div>"; }</script></head>
<body><!-- <div><div> --><main><p>One<p>Two<ul><li>a<li>b</ul><table><tr><td>1<td>2<tr><td>3</table>
<dl><dt>k<dd>v</dl><svg><path d="M0 0"/><g/></svg><select><option>a<option>b</select></main></body></html>"#;
        assert_eq!(cap_depth(page), None);
        let long: String = (0..5_000)
            .map(|i| format!("<p>para {i}<li>item<b>b</b>"))
            .collect();
        assert_eq!(cap_depth(&long), None);
    }

    #[test]
    fn cap_bounds_the_parsed_depth() {
        let n = 4_000;
        let patterns = [
            "<div>",
            "<span>",
            "<b>",
            "<b><div></b>",
            "<span><div></span>",
            "<p><table>",
            "<li><section>",
            "<svg><foreignObject><div>",
            "<table><tr><td>",
            "<a><div>",
            "<div/>",
            "<svg><g>",
            "<dl><dt><div>",
            "<ul><li>",
            "<font><center>",
            "<h1><span>",
            "<table><caption>",
            "<object>",
            "<button>",
            "<template>",
            "<math><mi>",
            "<i><p>",
            "<p><b>x</p>",
            "<select><optgroup>",
            "<table><p>",
            "<ruby><rt>",
        ];
        for p in patterns {
            let html = format!("<body>{}end</body>", p.repeat(n));
            let src = cap_depth(&html).map_or(html.clone(), |c| c.html);
            let doc = Html::parse_document(&src);
            let d = max_depth(&doc);
            assert!(
                d <= 2 * MAX_HTML_DEPTH + MAX_OPEN_FORMATTING,
                "{p} x {n}: parsed depth {d}"
            );
        }
        let growing: String = (0..n).map(|k| format!("<p><b id={k}>x")).collect();
        let src = cap_depth(&growing).map_or(growing.clone(), |c| c.html);
        let d = max_depth(&Html::parse_document(&src));
        assert!(
            d <= 2 * MAX_HTML_DEPTH + MAX_OPEN_FORMATTING,
            "reopened formatting: {d}"
        );
    }

    #[test]
    fn attributes_are_capped() {
        let attrs: String = (0..1_000).map(|i| format!(" a{i}=\"v>{i}\"")).collect();
        let html = format!("<div{attrs}>text</div>");
        let c = cap_depth(&html).expect("capped");
        assert_eq!(c.attributes, 1_000 - MAX_ATTRIBUTES);
        let t = convert(&html);
        assert_eq!(t.text, "text\n");
        assert_eq!(t.warnings.len(), 1);
    }

    #[test]
    fn linear_work() {
        use super::super::work::assert_linear;
        let run = |h: &str| convert(h);
        assert_linear(
            "nested div",
            2_000,
            |n| nested("<div>", "</div>", n, "x"),
            run,
        );
        assert_linear(
            "nested span",
            2_000,
            |n| nested("<span>", "</span>", n, "x"),
            run,
        );
        assert_linear("unclosed div", 2_000, |n| "<div>x ".repeat(n), run);
        assert_linear("b div", 2_000, |n| "<b><div></b>".repeat(n), run);
        assert_linear(
            "reopened formatting",
            2_000,
            |n| (0..n).map(|k| format!("<p><b id={k}>x")).collect(),
            run,
        );
        assert_linear(
            "attributes",
            2_000,
            |n| {
                format!(
                    "<div{}>x</div>",
                    (0..n).map(|i| format!(" a{i}")).collect::<String>()
                )
            },
            run,
        );
        assert_linear(
            "nested tables",
            1_000,
            |n| "<table><tr><td>x".repeat(n),
            run,
        );
        assert_linear("nested h1", 2_000, |n| "<h1><span>".repeat(n), run);
        assert_linear("comments", 2_000, |n| "<!-- <div> ".repeat(n), run);
        assert_linear("svg", 2_000, |n| "<svg><title>".repeat(n), run);
    }
}

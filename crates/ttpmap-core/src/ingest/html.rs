//! HTML to plain text lines (with the `scraper` crate).
//!
//! Owns [`html_to_text`]. Dropped entirely: `head`, `script`, `style`, `nav`, `header` (except
//! one inside `article`/`main`, where blogs put the post title), `footer`, `aside`, `noscript`,
//! `svg`, `form`, `template`, `iframe`, `button`, `select`, `canvas`, `object`, and elements with
//! the `hidden` attribute. Block elements end lines; each list item and each table row is a line
//! of its own (cells joined with ` | `); `pre` keeps its line breaks; inline text is joined with
//! collapsed whitespace. The title is `<title>`, else the first `<h1>`.

use scraper::node::Node;
use scraper::{ElementRef, Html, Selector};

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

/// Converts an HTML document to `(title, text)`; the text has one block per line.
pub fn html_to_text(html: &str) -> (Option<String>, String) {
    let doc = Html::parse_document(html);
    let title = first_text(&doc, "title").or_else(|| first_text(&doc, "h1"));
    let mut w = Writer::default();
    walk(doc.root_element(), &mut w, false);
    w.end_line();
    (title, w.out)
}

fn first_text(doc: &Html, tag: &str) -> Option<String> {
    let sel = Selector::parse(tag).ok()?;
    doc.select(&sel)
        .map(|e| collapse(&e.text().collect::<String>()))
        .find(|t| !t.is_empty())
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Default)]
struct Writer {
    out: String,
    line: String,
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

    fn raw_line(&mut self, text: &str) {
        self.end_line();
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn end_line(&mut self) {
        let l = self.line.trim();
        if !l.is_empty() {
            self.out.push_str(l);
            self.out.push('\n');
        }
        self.line.clear();
    }
}

fn walk(el: ElementRef<'_>, w: &mut Writer, in_article: bool) {
    let name = el.value().name();
    if DROPPED.contains(&name) || el.value().attr("hidden").is_some() {
        return;
    }
    if name == "header" && !in_article {
        return;
    }
    let in_article = in_article || name == "article" || name == "main";
    match name {
        "br" => {
            w.end_line();
            return;
        }
        "tr" => {
            let cells: Vec<String> = el
                .child_elements()
                .filter(|c| matches!(c.value().name(), "td" | "th"))
                .map(|c| {
                    let mut cw = Writer::default();
                    walk_children(c, &mut cw, in_article);
                    cw.end_line();
                    collapse(&cw.out)
                })
                .filter(|c| !c.is_empty())
                .collect();
            if !cells.is_empty() {
                w.raw_line(&cells.join(" | "));
            }
            return;
        }
        "pre" => {
            w.end_line();
            let text: String = el.text().collect();
            for line in text.lines() {
                w.raw_line(line);
            }
            return;
        }
        "img" => {
            if let Some(alt) = el.value().attr("alt") {
                w.inline(alt);
            }
            return;
        }
        _ => {}
    }
    let block = BLOCKS.contains(&name);
    if block {
        w.end_line();
    }
    walk_children(el, w, in_article);
    if block {
        w.end_line();
    }
}

fn walk_children(el: ElementRef<'_>, w: &mut Writer, in_article: bool) {
    for child in el.children() {
        match child.value() {
            Node::Text(t) => w.inline(t),
            Node::Element(_) => {
                if let Some(ce) = ElementRef::wrap(child) {
                    walk(ce, w, in_article);
                }
            }
            _ => {}
        }
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
}

//! PDF object syntax (ISO 32000-1 §7.2-7.3): an iterative parser of one object into a
//! [`lopdf::Object`], and a scanner of content streams for `/Name Do` invocations.
//!
//! Invariants: nothing here recurses on input structure (arrays and dictionaries are built
//! on an explicit stack, nested at most [`MAX_DEPTH`] deep, so the objects handed on are
//! shallow enough for lopdf's and pdf-extract's own recursive code: `Clone`, `Drop`,
//! `Debug`); every function takes bytes and an offset and never panics on them; the work
//! done is counted in a [`Work`] meter the caller caps.

use lopdf::{Dictionary, Object, StringFormat};

/// Deepest nesting of arrays and dictionaries accepted in one object; deeper objects are
/// refused (real files nest fewer than ten levels).
pub const MAX_DEPTH: usize = 64;

/// Counts bytes examined by the parser, so that a caller can bound the total work on one
/// file (a parse that fails is not free: an unterminated string runs to the end).
#[derive(Debug, Default, Clone, Copy)]
pub struct Work {
    pub bytes: u64,
}

pub fn is_ws(b: u8) -> bool {
    matches!(b, 0 | 9 | 10 | 12 | 13 | 32)
}

pub fn is_delim(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

pub fn is_regular(b: u8) -> bool {
    !is_ws(b) && !is_delim(b)
}

/// Skips white space and comments from `i`.
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        if is_ws(b[i]) {
            i += 1;
        } else if b[i] == b'%' {
            while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                i += 1;
            }
        } else {
            break;
        }
    }
    i
}

/// Whether `kw` starts at `i` as a whole token.
pub fn keyword_at(b: &[u8], i: usize, kw: &[u8]) -> bool {
    b.get(i..).is_some_and(|r| r.starts_with(kw))
        && b.get(i + kw.len()).is_none_or(|&c| !is_regular(c))
}

/// An unsigned integer token at `i` (at most 10 digits): `(value, end)`.
pub fn uint_at(b: &[u8], i: usize) -> Option<(u64, usize)> {
    let n = b
        .get(i..)?
        .iter()
        .take(11)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 || n > 10 || b.get(i + n).is_some_and(|&c| is_regular(c)) {
        return None;
    }
    let v = b[i..i + n]
        .iter()
        .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    Some((v, i + n))
}

enum Frame {
    Array(Vec<Object>),
    Dict(Dictionary, Option<Vec<u8>>),
}

/// Parses one object starting at `start` (white space first is skipped): `(object, end)`,
/// or `None` when the bytes are not an object (an unexpected keyword or delimiter, nesting
/// past [`MAX_DEPTH`], the end of the input inside the object).
pub fn parse_object(b: &[u8], start: usize, work: &mut Work) -> Option<(Object, usize)> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = start;
    let result = loop {
        i = skip_ws(b, i);
        let c = *b.get(i)?;
        let value = match c {
            b'[' | b'<' if c == b'[' || b.get(i + 1) == Some(&b'<') => {
                if stack.len() >= MAX_DEPTH {
                    break None;
                }
                if c == b'[' {
                    stack.push(Frame::Array(Vec::new()));
                    i += 1;
                } else {
                    stack.push(Frame::Dict(Dictionary::new(), None));
                    i += 2;
                }
                continue;
            }
            b']' => match stack.pop() {
                Some(Frame::Array(v)) => {
                    i += 1;
                    Object::Array(v)
                }
                _ => break None,
            },
            b'>' if b.get(i + 1) == Some(&b'>') => match stack.pop() {
                Some(Frame::Dict(d, _)) => {
                    i += 2;
                    Object::Dictionary(d)
                }
                _ => break None,
            },
            b'(' => {
                let (s, end) = literal_string(b, i + 1)?;
                i = end;
                Object::String(s, StringFormat::Literal)
            }
            b'<' => {
                let (s, end) = hex_string(b, i + 1)?;
                i = end;
                Object::String(s, StringFormat::Hexadecimal)
            }
            b'/' => {
                let (n, end) = name(b, i + 1);
                i = end;
                Object::Name(n)
            }
            b'+' | b'-' | b'.' | b'0'..=b'9' => {
                let (o, end) = number_or_ref(b, i);
                i = end;
                o
            }
            _ if is_regular(c) => {
                let n = b[i..].iter().take_while(|&&x| is_regular(x)).count();
                let o = match &b[i..i + n] {
                    b"true" => Object::Boolean(true),
                    b"false" => Object::Boolean(false),
                    b"null" => Object::Null,
                    _ => break None,
                };
                i += n;
                o
            }
            _ => break None,
        };
        match stack.last_mut() {
            None => break Some((value, i)),
            Some(Frame::Array(v)) => v.push(value),
            Some(Frame::Dict(d, key)) => match key.take() {
                Some(k) => d.set(k, value),
                // A value where a key belongs is skipped (lenient, as readers are).
                None => {
                    if let Object::Name(n) = value {
                        *key = Some(n);
                    }
                }
            },
        }
    };
    work.bytes += (i.max(start) - start) as u64 + 1;
    result
}

/// A literal string from just after its `(`: `(bytes, end after the closing paren)`.
fn literal_string(b: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut depth = 1usize;
    while i < b.len() {
        let c = b[i];
        i += 1;
        match c {
            b'(' => {
                depth += 1;
                out.push(c);
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((out, i));
                }
                out.push(c);
            }
            b'\\' => {
                let e = *b.get(i)?;
                i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match b.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push((v & 0xff) as u8);
                    }
                    b'\r' => {
                        if b.get(i) == Some(&b'\n') {
                            i += 1;
                        }
                    }
                    b'\n' => {}
                    other => out.push(other),
                }
            }
            _ => out.push(c),
        }
    }
    None
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A hex string from just after its `<`: `(bytes, end after the `>`)`; an odd last digit is
/// followed by 0 (§7.3.4.3).
fn hex_string(b: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut high: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c == b'>' {
            if let Some(h) = high {
                out.push(h << 4);
            }
            return Some((out, i));
        }
        if is_ws(c) {
            continue;
        }
        let v = hex_val(c)?;
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    None
}

/// A name from just after its `/`, with `#xx` escapes decoded.
fn name(b: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    while i < b.len() && is_regular(b[i]) {
        if b[i] == b'#' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    (out, i)
}

/// A number at `i`, or a reference `N G R` when an unsigned integer is followed by another
/// and `R`.
fn number_or_ref(b: &[u8], i: usize) -> (Object, usize) {
    if let Some((num, end)) = uint_at(b, i) {
        let j = skip_ws(b, end);
        if j > end {
            if let Some((gen, gend)) = uint_at(b, j) {
                let k = skip_ws(b, gend);
                if k > gend && keyword_at(b, k, b"R") {
                    if let (Ok(n), Ok(g)) = (u32::try_from(num), u16::try_from(gen)) {
                        return (Object::Reference((n, g)), k + 1);
                    }
                }
            }
        }
    }
    let n = b[i..]
        .iter()
        .take_while(|&&c| matches!(c, b'+' | b'-' | b'.' | b'0'..=b'9'))
        .count();
    let tok = std::str::from_utf8(&b[i..i + n]).unwrap_or("0");
    let obj = if tok.contains('.') {
        // Lenient like other readers: `--5`, `5.` and `.5` are numbers; junk is 0.
        Object::Real(
            tok.trim_start_matches(['+', '-'])
                .parse::<f32>()
                .map_or(0.0, |v| if tok.starts_with('-') { -v } else { v }),
        )
    } else {
        let neg = tok.starts_with('-');
        let digits = tok.trim_start_matches(['+', '-']);
        match digits.parse::<i64>() {
            Ok(v) => Object::Integer(if neg { -v } else { v }),
            Err(_) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
                Object::Real(digits.parse::<f32>().unwrap_or(0.0))
            }
            Err(_) => Object::Integer(0),
        }
    };
    (obj, i + n.max(1))
}

/// A `/Name Do` in a content stream: the name and the byte range from the name to the end
/// of `Do` (to blank the invocation out).
pub struct DoCall {
    pub name: Vec<u8>,
    pub range: std::ops::Range<usize>,
}

/// Calls `op(operator, operator range, operand ranges)` for every operator of a content
/// stream, in order. Strings, arrays, dictionaries, comments and inline image data
/// (`BI ... ID ... EI`) are skipped as units, so bytes inside them are not taken for
/// operators. Iterative; at most [`MAX_DEPTH`] operands are remembered per operator.
fn for_each_op(
    b: &[u8],
    work: &mut Work,
    mut op: impl FnMut(&[u8], std::ops::Range<usize>, &[std::ops::Range<usize>]),
) {
    let mut operands: Vec<std::ops::Range<usize>> = Vec::new();
    // Open arrays / dictionaries: the operand starts at the outermost one.
    let mut open: Option<usize> = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        i = skip_ws(b, i);
        let Some(&c) = b.get(i) else { break };
        let start = i;
        let mut is_operand = true;
        match c {
            b'/' => i = name(b, i + 1).1,
            b'(' => i = literal_string(b, i + 1).map_or(b.len(), |(_, e)| e),
            b'<' if b.get(i + 1) == Some(&b'<') => {
                i += 2;
                depth += 1;
                open.get_or_insert(start);
                continue;
            }
            b'[' => {
                i += 1;
                depth += 1;
                open.get_or_insert(start);
                continue;
            }
            b'>' if b.get(i + 1) == Some(&b'>') => {
                i += 2;
                depth = depth.saturating_sub(1);
            }
            b']' => {
                i += 1;
                depth = depth.saturating_sub(1);
            }
            b'<' => i = hex_string(b, i + 1).map_or(i + 1, |(_, e)| e),
            _ if is_regular(c) => {
                let n = b[i..].iter().take_while(|&&x| is_regular(x)).count();
                i += n;
                let tok = &b[start..i];
                let numeric = tok
                    .iter()
                    .all(|&x| matches!(x, b'+' | b'-' | b'.' | b'0'..=b'9'));
                let keyword = matches!(tok, b"true" | b"false" | b"null");
                if depth == 0 && !numeric && !keyword {
                    is_operand = false;
                    op(tok, start..i, &operands);
                    operands.clear();
                    if tok == b"ID" {
                        // Inline image data runs to white space, `EI`, white space or the end.
                        let mut j = i + 1;
                        while j < b.len() {
                            if b[j] == b'E'
                                && b.get(j + 1) == Some(&b'I')
                                && is_ws(b[j - 1])
                                && b.get(j + 2).is_none_or(|&x| is_ws(x))
                            {
                                break;
                            }
                            j += 1;
                        }
                        i = (j + 2).min(b.len());
                    }
                }
            }
            _ => {
                i += 1;
                is_operand = false;
            }
        }
        if is_operand && depth == 0 {
            let from = open.take().unwrap_or(start);
            if operands.len() < MAX_DEPTH {
                operands.push(from..i);
            }
        }
    }
    work.bytes += b.len() as u64;
}

/// Every `/Name Do` in a content stream, in order.
pub fn do_calls(b: &[u8], work: &mut Work) -> Vec<DoCall> {
    let mut out = Vec::new();
    for_each_op(b, work, |tok, range, operands| {
        if tok == b"Do" {
            if let Some(last) = operands.last() {
                if b.get(last.start) == Some(&b'/') {
                    out.push(DoCall {
                        name: name(b, last.start + 1).0,
                        range: last.start..range.end,
                    });
                }
            }
        }
    });
    out
}

/// Rewrites the text operators `'` and `"` (§9.4.3: next line, then show) into the
/// equivalent `T*`, `Tw`, `Tc` and `Tj`, which pdf-extract 0.12 implements (it ignores the
/// quote forms, and Ghostscript writes them for most lines). `None` when there are none.
pub fn rewrite_quotes(b: &[u8], work: &mut Work) -> Option<Vec<u8>> {
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
    for_each_op(b, work, |tok, range, operands| {
        let n = operands.len();
        match tok {
            b"'" if n >= 1 => {
                let s = &operands[n - 1];
                let mut r = b" T* ".to_vec();
                r.extend_from_slice(&b[s.clone()]);
                r.extend_from_slice(b" Tj ");
                edits.push((s.start..range.end, r));
            }
            b"\"" if n >= 3 => {
                let (aw, ac, s) = (&operands[n - 3], &operands[n - 2], &operands[n - 1]);
                let mut r = b" ".to_vec();
                r.extend_from_slice(&b[aw.clone()]);
                r.extend_from_slice(b" Tw ");
                r.extend_from_slice(&b[ac.clone()]);
                r.extend_from_slice(b" Tc T* ");
                r.extend_from_slice(&b[s.clone()]);
                r.extend_from_slice(b" Tj ");
                edits.push((aw.start..range.end, r));
            }
            _ => {}
        }
    });
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() + edits.len() * 8);
    let mut at = 0;
    for (r, text) in edits {
        out.extend_from_slice(&b[at..r.start]);
        out.extend_from_slice(&text);
        at = r.end;
    }
    out.extend_from_slice(&b[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Option<Object> {
        parse_object(s, 0, &mut Work::default()).map(|(o, _)| o)
    }

    #[test]
    fn objects() {
        let o = parse(b"<< /Type /Page /Kids [1 0 R 2 0 R] /N -3 /R 1.5 /S (a\\(b\\)c\\101) /H <414> /B true /Z null /A#20b 7 >>").unwrap();
        let d = o.as_dict().unwrap();
        assert_eq!(d.get(b"Type").unwrap().as_name().unwrap(), b"Page");
        let kids = d.get(b"Kids").unwrap().as_array().unwrap();
        assert_eq!(kids[1].as_reference().unwrap(), (2, 0));
        assert_eq!(d.get(b"N").unwrap().as_i64().unwrap(), -3);
        assert_eq!(d.get(b"S").unwrap().as_str().unwrap(), b"a(b)cA");
        assert_eq!(d.get(b"H").unwrap().as_str().unwrap(), b"A@");
        assert_eq!(d.get(b"A b").unwrap().as_i64().unwrap(), 7);
        assert!(parse(b"[1 2").is_none());
        assert!(parse(b"<< /A (unterminated >>").is_none());
        assert!(parse(b"<< /A 1 endobj").is_none());
    }

    #[test]
    fn nesting_is_capped_without_recursion() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(deep.as_bytes()).is_some());
        let deeper = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(deeper.as_bytes()).is_none());
    }

    #[test]
    fn do_calls_skip_strings_and_inline_images() {
        let c = b"q /Fm1 Do (/X Do) Tj BI /W 1 ID \x00/Y Do EI Q /Fm2 Do";
        let calls = do_calls(c, &mut Work::default());
        let names: Vec<_> = calls.iter().map(|d| d.name.clone()).collect();
        assert_eq!(names, vec![b"Fm1".to_vec(), b"Fm2".to_vec()]);
        assert_eq!(&c[calls[0].range.clone()], b"/Fm1 Do");
        let calls = do_calls(b"[/A] Do /B [1 2] Do /C Do", &mut Work::default());
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn quote_operators_become_tj() {
        let c = b"BT 16 TL (a)' 1 2 (b c)\" [(x)] TJ ET";
        let out = rewrite_quotes(c, &mut Work::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "BT 16 TL  T* (a) Tj   1 Tw 2 Tc T* (b c) Tj  [(x)] TJ ET"
        );
        assert!(rewrite_quotes(b"BT (a) Tj ET", &mut Work::default()).is_none());
    }
}

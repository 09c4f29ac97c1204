//! Loading a PDF into a [`lopdf::Document`] that is safe to hand to the text extractor.
//!
//! Owns [`load`]. The file's cross-reference data is not trusted: objects are found by
//! scanning the bytes for `N G obj` headers (skipping stream data, whose extent comes from a
//! direct `/Length` when `endstream` follows it, else from the next `endstream`), as
//! mainstream readers do when they repair a file. A later definition of an object replaces
//! an earlier one (incremental updates append). The trailer is the last `trailer` dictionary
//! or cross-reference stream dictionary that names a `/Root`; without one the last
//! `/Type /Catalog` object is used.
//!
//! Invariants of a loaded document:
//! - no stream still carries a filter that lopdf or pdf-extract would decode (Flate, LZW,
//!   ASCII85): every stream was decoded here under one [`Budget`], object streams were
//!   expanded from their decoded bytes, cross-reference streams and image, XMP metadata and
//!   embedded-file data were dropped undecoded (text extraction does not read them);
//! - encrypted files (empty user password) are decrypted object by object before decoding;
//! - every page is a direct child of one flat `/Pages` node, carries its own `/Resources`
//!   and a four-number `/MediaBox` (letter size when it had none) and no `/Parent`, so
//!   pdf-extract's recursive attribute lookup has nothing to recurse into;
//! - the text operators `'` and `"` of page contents and forms are rewritten as `T*` +
//!   `Tj` (pdf-extract 0.12 ignores them; Ghostscript writes them for most lines);
//! - no form XObject invokes itself, directly or through others, and none nests deeper than
//!   [`MAX_FORM_DEPTH`]: such invocations are blanked out of the content stream, with a
//!   warning (pdf-extract follows `Do` recursively without a cycle check);
//! - each page's drawing cost (content bytes, forms expanded) is known before extraction, so
//!   the caller can bound the extractor's work (forms invoked many times multiply it);
//! - nothing here recurses on input structure, and the work is linear in the input: parsing
//!   is metered and capped at [`WORK_PER_BYTE`] times the file size.

use std::collections::{BTreeMap, HashSet};

use lopdf::{Dictionary, Document, Object, ObjectId, Stream};

use super::filters::{decode_stream, Budget, Exceeded};
use super::syntax::{
    do_calls, is_regular, is_ws, keyword_at, parse_object, rewrite_quotes, skip_ws, uint_at, Work,
};

/// Deepest chain of form XObjects invoking one another that is followed.
pub const MAX_FORM_DEPTH: usize = 32;

/// Parser work allowed per input byte (plus a constant) before a file is refused as too
/// irregular; well-formed files need about 1.
pub const WORK_PER_BYTE: u64 = 16;

/// Letter size, what readers assume for a page without a usable `/MediaBox`.
const DEFAULT_MEDIA_BOX: [f32; 4] = [0.0, 0.0, 612.0, 792.0];

/// Why a file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// Decoding the streams went past the budget.
    Bomb { limit: u64 },
    /// Encrypted, and the empty user password does not open it.
    Encrypted(Option<lopdf::Error>),
    /// Damaged beyond repair: what is missing.
    Damaged(&'static str),
    /// The structure needs more work than [`WORK_PER_BYTE`] allows.
    TooIrregular,
}

/// Counts of the work done, for tests that check linear cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Bytes examined by the object parser and scanners.
    pub bytes_parsed: u64,
    /// Bytes produced by stream decoders (all stages).
    pub bytes_decoded: u64,
    /// Objects in the rebuilt document.
    pub objects: u64,
    /// Form XObject invocations followed.
    pub form_calls: u64,
}

pub struct Loaded {
    pub doc: Document,
    /// Page object ids in reading order.
    pub pages: Vec<ObjectId>,
    /// For each page, the content bytes the extractor will run through to draw it, every
    /// form XObject invocation counted (a form drawn 1000 times counts 1000 times).
    pub page_costs: Vec<u64>,
    /// The flat `/Pages` node that lists them (the extractor is pointed at one page at a
    /// time through its `/Kids`).
    pub pages_node: ObjectId,
    pub warnings: Vec<String>,
    pub stats: LoadStats,
}

struct Scan {
    /// Object -> (file position of its definition, object).
    objects: BTreeMap<ObjectId, (usize, Object)>,
    trailers: Vec<Dictionary>,
}

/// `N G` before the `obj` keyword at `i`.
fn header_before(b: &[u8], i: usize) -> Option<ObjectId> {
    let mut j = i;
    let ws = |j: &mut usize| {
        let start = *j;
        while *j > 0 && start - *j < 64 && is_ws(b[*j - 1]) {
            *j -= 1;
        }
        *j < start
    };
    let digits = |j: &mut usize, max: usize| {
        let start = *j;
        while *j > 0 && start - *j < max && b[*j - 1].is_ascii_digit() {
            *j -= 1;
        }
        (*j < start).then_some(*j)
    };
    if !ws(&mut j) {
        return None;
    }
    let g = digits(&mut j, 5)?;
    if !ws(&mut j) {
        return None;
    }
    let n = digits(&mut j, 10)?;
    if j > 0 && is_regular(b[j - 1]) {
        return None;
    }
    let (num, _) = uint_at(b, n)?;
    let (gen, _) = uint_at(b, g)?;
    Some((u32::try_from(num).ok()?, u16::try_from(gen).ok()?))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn scan(b: &[u8], work: &mut Work) -> Result<Scan, LoadError> {
    let cap = WORK_PER_BYTE * b.len() as u64 + (1 << 20);
    let mut objects = BTreeMap::new();
    let mut trailers = Vec::new();
    // The next `endstream` at or after some position (`b.len()` when there is none), so
    // searches for it never cover the same bytes twice.
    let mut next_endstream: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        if work.bytes > cap {
            return Err(LoadError::TooIrregular);
        }
        let c = b[i];
        let at_token = i == 0 || !is_regular(b[i - 1]);
        if c == b'o' && at_token && keyword_at(b, i, b"obj") {
            if let Some(id) = header_before(b, i) {
                if let Some((obj, end)) = parse_object(b, i + 3, work) {
                    let mut next = end;
                    let obj = match obj {
                        Object::Dictionary(dict) if keyword_at(b, skip_ws(b, end), b"stream") => {
                            let mut start = skip_ws(b, end) + 6;
                            if b.get(start) == Some(&b'\r') {
                                start += 1;
                            }
                            if b.get(start) == Some(&b'\n') {
                                start += 1;
                            }
                            let start = start.min(b.len());
                            let direct = dict
                                .get(b"Length")
                                .ok()
                                .and_then(|o| o.as_i64().ok())
                                .and_then(|l| usize::try_from(l).ok())
                                .and_then(|l| start.checked_add(l))
                                .filter(|&e| {
                                    e <= b.len() && keyword_at(b, skip_ws(b, e), b"endstream")
                                });
                            let (data_end, after) = match direct {
                                Some(e) => (e, skip_ws(b, e) + 9),
                                None => {
                                    let p = match next_endstream {
                                        Some(p) if p >= start => p,
                                        _ => {
                                            let p = find(&b[start..], b"endstream")
                                                .map_or(b.len(), |x| start + x);
                                            work.bytes += (p - start) as u64;
                                            next_endstream = Some(p);
                                            p
                                        }
                                    };
                                    let mut e = p;
                                    if e > start && b[e - 1] == b'\n' {
                                        e -= 1;
                                    }
                                    if e > start && b[e - 1] == b'\r' {
                                        e -= 1;
                                    }
                                    (e, (p + 9).min(b.len()))
                                }
                            };
                            if dict.has_type(b"XRef") {
                                trailers.push(dict.clone());
                            }
                            next = after;
                            Object::Stream(Stream::new(dict, b[start..data_end].to_vec()))
                        }
                        other => other,
                    };
                    objects.insert(id, (i, obj));
                    i = next.max(i + 1);
                    continue;
                }
            }
        } else if c == b't' && at_token && keyword_at(b, i, b"trailer") {
            if let Some((Object::Dictionary(d), end)) = parse_object(b, i + 7, work) {
                trailers.push(d);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    work.bytes += b.len() as u64;
    Ok(Scan { objects, trailers })
}

/// What is wrong with the file's own cross-reference data, if anything (for a warning:
/// the document is rebuilt by scanning in any case).
fn xref_damage(b: &[u8]) -> Option<String> {
    let tail_start = b.len().saturating_sub(2048);
    let Some(at) = b[tail_start..].windows(9).rposition(|w| w == b"startxref") else {
        return Some("no startxref at the end of the file (truncated?)".to_string());
    };
    let Some((off, _)) = uint_at(b, skip_ws(b, tail_start + at + 9)) else {
        return Some("startxref has no offset".to_string());
    };
    let Some(off) = usize::try_from(off).ok().filter(|&o| o < b.len()) else {
        return Some(format!("startxref {off} points past the end of the file"));
    };
    let p = skip_ws(b, off);
    if keyword_at(b, p, b"xref") {
        let q = skip_ws(b, p + 4);
        let ok = uint_at(b, q).is_some_and(|(_, e)| {
            let r = skip_ws(b, e);
            r > e && uint_at(b, r).is_some()
        });
        return (!ok)
            .then(|| format!("invalid start value in the cross-reference table at offset {off}"));
    }
    let obj = uint_at(b, p).and_then(|(_, e)| {
        let r = skip_ws(b, e);
        uint_at(b, r).map(|(_, e2)| keyword_at(b, skip_ws(b, e2), b"obj"))
    });
    if obj == Some(true) {
        None
    } else {
        Some(format!(
            "startxref {off} does not point at a cross-reference table"
        ))
    }
}

fn version(b: &[u8]) -> String {
    let head = &b[..b.len().min(1024)];
    find(head, b"%PDF-")
        .map(|p| {
            head[p + 5..]
                .iter()
                .take(3)
                .take_while(|c| c.is_ascii_digit() || **c == b'.')
                .map(|&c| c as char)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.4".to_string())
}

fn has_pages(doc: &Document, id: ObjectId) -> bool {
    doc.objects
        .get(&id)
        .and_then(|o| o.as_dict().ok())
        .is_some_and(|d| d.get(b"Pages").is_ok())
}

/// Builds the trailer from the scanned ones and checks `/Root`.
fn trailer(
    doc: &Document,
    scan_trailers: &[Dictionary],
    positions: &BTreeMap<ObjectId, usize>,
    warnings: &mut Vec<String>,
) -> Result<Dictionary, LoadError> {
    let mut t = scan_trailers
        .iter()
        .rev()
        .find(|d| d.get(b"Root").is_ok())
        .cloned()
        .unwrap_or_default();
    if t.get(b"Info").is_err() {
        if let Some(info) = scan_trailers.iter().rev().find_map(|d| d.get(b"Info").ok()) {
            t.set("Info", info.clone());
        }
    }
    let root_ok = t
        .get(b"Root")
        .and_then(Object::as_reference)
        .is_ok_and(|id| has_pages(doc, id));
    if !root_ok {
        let catalog = doc
            .objects
            .iter()
            .filter(|(_, o)| o.as_dict().is_ok_and(|d| d.has_type(b"Catalog")))
            .filter(|(id, _)| has_pages(doc, **id))
            .max_by_key(|(id, _)| positions.get(id).copied().unwrap_or(0))
            .map(|(id, _)| *id);
        match catalog {
            Some(id) => {
                if t.get(b"Root").is_ok() {
                    warnings.push(format!(
                        "the trailer's /Root is missing or not a catalog; used object {} {}",
                        id.0, id.1
                    ));
                }
                t.set("Root", Object::Reference(id));
            }
            None => return Err(LoadError::Damaged("no document catalog (/Root) found")),
        }
    }
    Ok(t)
}

fn resolve<'a>(doc: &'a Document, o: &'a Object) -> &'a Object {
    match o {
        Object::Reference(id) => doc.objects.get(id).unwrap_or(&Object::Null),
        _ => o,
    }
}

/// Decodes every stream under `budget`; drops data text extraction never reads.
fn decode_all(doc: &mut Document, budget: &mut Budget) -> Result<(), Exceeded> {
    let ids: Vec<ObjectId> = doc
        .objects
        .iter()
        .filter(|(_, o)| matches!(o, Object::Stream(_)))
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        let Some(Object::Stream(mut s)) = doc.objects.remove(&id) else {
            continue;
        };
        let skip = s.dict.has_type(b"XRef")
            || s.dict.has_type(b"Metadata")
            || s.dict.has_type(b"EmbeddedFile")
            || s.dict
                .get(b"Subtype")
                .and_then(Object::as_name)
                .is_ok_and(|n| n == b"Image");
        if skip {
            s.set_plain_content(Vec::new());
        } else {
            for key in [&b"Filter"[..], b"DecodeParms"] {
                if let Ok(Object::Reference(r)) = s.dict.get(key) {
                    let v = doc.objects.get(r).cloned().unwrap_or(Object::Null);
                    s.dict.set(key, v);
                }
            }
            decode_stream(&mut s, budget)?;
        }
        doc.objects.insert(id, Object::Stream(s));
    }
    Ok(())
}

/// Replaces each object stream by the objects it holds (a definition elsewhere that comes
/// later in the file wins).
fn expand_object_streams(
    doc: &mut Document,
    positions: &mut BTreeMap<ObjectId, usize>,
    work: &mut Work,
) {
    let ids: Vec<ObjectId> = doc
        .objects
        .iter()
        .filter(|(_, o)| o.as_stream().is_ok_and(|s| s.dict.has_type(b"ObjStm")))
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        let Some(Object::Stream(s)) = doc.objects.remove(&id) else {
            continue;
        };
        if s.dict.get(b"Filter").is_ok() {
            continue; // an unknown filter: nothing readable inside
        }
        let pos = positions.get(&id).copied().unwrap_or(0);
        let c = &s.content;
        let first = s
            .dict
            .get(b"First")
            .and_then(Object::as_i64)
            .ok()
            .and_then(|f| usize::try_from(f).ok())
            .filter(|&f| f <= c.len())
            .unwrap_or(0);
        let n = s
            .dict
            .get(b"N")
            .and_then(Object::as_i64)
            .unwrap_or(0)
            .max(0) as usize;
        let mut i = 0;
        for _ in 0..n.min(c.len()) {
            let Some((num, e)) = uint_at(c, skip_ws(c, i)) else {
                break;
            };
            let Some((off, e2)) = uint_at(c, skip_ws(c, e)) else {
                break;
            };
            i = e2;
            if i > first {
                break;
            }
            let Ok(num) = u32::try_from(num) else {
                continue;
            };
            let Some(at) = usize::try_from(off).ok().and_then(|o| first.checked_add(o)) else {
                continue;
            };
            let Some((obj, _)) = parse_object(c, at.min(c.len()), work) else {
                continue;
            };
            let oid = (num, 0);
            if positions.get(&oid).is_none_or(|&p| p < pos) {
                positions.insert(oid, pos);
                doc.objects.insert(oid, obj);
            }
        }
    }
}

fn media_box(doc: &Document, o: Option<&Object>) -> Option<Vec<Object>> {
    let arr = resolve(doc, o?).as_array().ok()?;
    let nums: Vec<f32> = arr
        .iter()
        .map(|x| match resolve(doc, x) {
            Object::Integer(i) => Some(*i as f32),
            Object::Real(r) if r.is_finite() => Some(*r),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if nums.len() < 4 {
        return None;
    }
    Some(nums[..4].iter().map(|&v| Object::Real(v)).collect())
}

/// Walks the page tree iteratively (each node once), gives every page its inherited
/// `/Resources` and `/MediaBox`, and hangs the pages under one new flat `/Pages` node.
fn flatten_pages(
    doc: &mut Document,
    warnings: &mut Vec<String>,
) -> Result<(Vec<ObjectId>, ObjectId), LoadError> {
    let root = doc
        .trailer
        .get(b"Root")
        .and_then(Object::as_reference)
        .map_err(|_| LoadError::Damaged("no document catalog (/Root) found"))?;
    let top = doc
        .objects
        .get(&root)
        .and_then(|o| o.as_dict().ok())
        .and_then(|d| d.get(b"Pages").ok())
        .cloned()
        .ok_or(LoadError::Damaged("no page tree (/Pages) found"))?;
    // (node, inherited /Resources, inherited /MediaBox)
    let mut stack: Vec<(Object, Option<Object>, Option<Object>)> = vec![(top, None, None)];
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut pages: Vec<(ObjectId, Option<Object>, Option<Object>)> = Vec::new();
    let mut missing = 0usize;
    let mut cycles = 0usize;
    while let Some((node, res, mb)) = stack.pop() {
        let Object::Reference(id) = node else {
            continue;
        };
        if !seen.insert(id) {
            cycles += 1;
            continue;
        }
        let Some(dict) = doc.objects.get(&id).and_then(|o| o.as_dict().ok()) else {
            missing += 1;
            continue;
        };
        let res = dict.get(b"Resources").ok().cloned().or(res);
        let mb = dict.get(b"MediaBox").ok().cloned().or(mb);
        match dict.get(b"Kids").map(|k| resolve(doc, k)) {
            Ok(Object::Array(kids)) if !dict.has_type(b"Page") => {
                for k in kids.iter().rev() {
                    stack.push((k.clone(), res.clone(), mb.clone()));
                }
            }
            _ => pages.push((id, res, mb)),
        }
    }
    if missing > 0 {
        warnings.push(format!(
            "{missing} page(s) or page-tree node(s) are missing from the file (damaged or truncated?); they were skipped"
        ));
    }
    if cycles > 0 {
        warnings.push(format!(
            "the page tree lists {cycles} node(s) more than once (a cycle or repeated pages); repeats were skipped"
        ));
    }
    if pages.is_empty() {
        return Err(LoadError::Damaged("no pages found"));
    }
    let node_id = (doc.objects.keys().map(|k| k.0).max().unwrap_or(0) + 1, 0);
    let mut ids = Vec::with_capacity(pages.len());
    for (id, res, mb) in pages {
        let mb = media_box(doc, mb.as_ref())
            .unwrap_or_else(|| DEFAULT_MEDIA_BOX.iter().map(|&v| Object::Real(v)).collect());
        if let Some(Object::Dictionary(d)) = doc.objects.get_mut(&id) {
            d.remove(b"Parent");
            d.set("MediaBox", Object::Array(mb));
            if let Some(r) = res {
                d.set("Resources", r);
            }
            d.set("Type", Object::Name(b"Page".to_vec()));
        }
        ids.push(id);
    }
    let mut node = Dictionary::new();
    node.set("Type", Object::Name(b"Pages".to_vec()));
    node.set(
        "Kids",
        Object::Array(ids.iter().map(|&i| Object::Reference(i)).collect()),
    );
    node.set("Count", ids.len() as i64);
    doc.objects.insert(node_id, Object::Dictionary(node));
    if let Some(Object::Dictionary(cat)) = doc.objects.get_mut(&root) {
        cat.set("Pages", Object::Reference(node_id));
    }
    Ok((ids, node_id))
}

/// Where the `/XObject` dictionary in effect comes from: the object that holds the
/// `/Resources` entry (a page or a form), read afresh on each lookup.
fn xobject_ref(doc: &Document, holder: ObjectId, name: &[u8]) -> Option<ObjectId> {
    let dict = match doc.objects.get(&holder)? {
        Object::Dictionary(d) => d,
        Object::Stream(s) => &s.dict,
        _ => return None,
    };
    let res = resolve(doc, dict.get(b"Resources").ok()?).as_dict().ok()?;
    let xo = resolve(doc, res.get(b"XObject").ok()?).as_dict().ok()?;
    xo.get(name).and_then(Object::as_reference).ok()
}

/// Blanks out form XObject invocations that would recurse (a cycle, or deeper than
/// [`MAX_FORM_DEPTH`]), following `Do` as pdf-extract does: the form's own `/Resources`,
/// else the ones in effect. Returns each page's cost (see [`Loaded::page_costs`]), computed
/// with one walk per form and resources (memoised), so repeated forms cost nothing here.
fn guard_forms(
    doc: &mut Document,
    pages: &[ObjectId],
    work: &mut Work,
    stats: &mut LoadStats,
    warnings: &mut Vec<String>,
) -> Result<Vec<u64>, LoadError> {
    struct Frame {
        calls: Vec<(Vec<u8>, std::ops::Range<usize>, ObjectId)>,
        next: usize,
        holder: ObjectId,
        /// (form, resources holder) of this frame; `None` for the page.
        key: Option<(ObjectId, ObjectId)>,
        /// Content bytes the extractor will run through for this frame, forms included.
        cost: u64,
    }
    let cap = WORK_PER_BYTE * (work.bytes + 1) + (1 << 20);
    // Cost of a form under given resources, once its walk is finished.
    let mut done: BTreeMap<(ObjectId, ObjectId), u64> = BTreeMap::new();
    let mut page_costs = Vec::with_capacity(pages.len());
    let len_of = |doc: &Document, sid: ObjectId| {
        doc.objects
            .get(&sid)
            .and_then(|o| o.as_stream().ok())
            .map_or(0, |s| s.content.len() as u64)
    };
    let mut blank: Vec<(ObjectId, std::ops::Range<usize>)> = Vec::new();
    let mut cut_pages: Vec<usize> = Vec::new();
    let content_calls = |doc: &Document, sid: ObjectId, work: &mut Work| {
        doc.objects
            .get(&sid)
            .and_then(|o| o.as_stream().ok())
            .map(|s| {
                do_calls(&s.content, work)
                    .into_iter()
                    .map(|c| (c.name, c.range, sid))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    for (n, &page) in pages.iter().enumerate() {
        let mut calls = Vec::new();
        let mut cost = 0u64;
        for sid in doc.get_page_contents(page) {
            calls.extend(content_calls(doc, sid, work));
            cost = cost.saturating_add(len_of(doc, sid));
        }
        let mut stack = vec![Frame {
            calls,
            next: 0,
            holder: page,
            key: None,
            cost,
        }];
        let mut path: Vec<ObjectId> = Vec::new();
        while let Some(top) = stack.last_mut() {
            if top.next == top.calls.len() {
                let Some(f) = stack.pop() else { break };
                path.pop();
                match (f.key, stack.last_mut()) {
                    (Some(key), Some(parent)) => {
                        done.insert(key, f.cost);
                        parent.cost = parent.cost.saturating_add(f.cost);
                    }
                    _ => page_costs.push(f.cost),
                }
                continue;
            }
            let (name, range, sid) = top.calls[top.next].clone();
            top.next += 1;
            let holder = top.holder;
            stats.form_calls += 1;
            if work.bytes > cap {
                return Err(LoadError::TooIrregular);
            }
            let Some(xid) = xobject_ref(doc, holder, &name) else {
                continue;
            };
            let Some(Object::Stream(xs)) = doc.objects.get(&xid) else {
                continue;
            };
            if path.contains(&xid) || path.len() >= MAX_FORM_DEPTH {
                blank.push((sid, range));
                if cut_pages.last() != Some(&(n + 1)) {
                    cut_pages.push(n + 1);
                }
                continue;
            }
            let inner = if xs.dict.get(b"Resources").is_ok() {
                xid
            } else {
                holder
            };
            if let Some(&c) = done.get(&(xid, inner)) {
                top.cost = top.cost.saturating_add(c);
                continue;
            }
            let cost = len_of(doc, xid);
            let calls = content_calls(doc, xid, work);
            path.push(xid);
            stack.push(Frame {
                calls,
                next: 0,
                holder: inner,
                key: Some((xid, inner)),
                cost,
            });
        }
    }
    for (sid, range) in blank {
        if let Some(Object::Stream(s)) = doc.objects.get_mut(&sid) {
            if let Some(bytes) = s.content.get_mut(range) {
                bytes.fill(b' ');
            }
        }
    }
    if !cut_pages.is_empty() {
        let list: Vec<String> = cut_pages.iter().map(ToString::to_string).collect();
        warnings.push(format!(
            "page(s) {}: form XObjects that invoke themselves or nest deeper than {MAX_FORM_DEPTH} levels were not followed",
            list.join(", ")
        ));
    }
    Ok(page_costs)
}

/// Rewrites the `'` and `"` text operators of page contents and form XObjects (see
/// [`rewrite_quotes`]).
fn rewrite_text_operators(doc: &mut Document, pages: &[ObjectId], work: &mut Work) {
    let mut ids: Vec<ObjectId> = pages
        .iter()
        .flat_map(|&p| doc.get_page_contents(p))
        .collect();
    ids.extend(doc.objects.iter().filter_map(|(id, o)| {
        let s = o.as_stream().ok()?;
        s.dict
            .get(b"Subtype")
            .and_then(Object::as_name)
            .is_ok_and(|n| n == b"Form")
            .then_some(*id)
    }));
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        if let Some(Object::Stream(s)) = doc.objects.get_mut(&id) {
            if let Some(new) = rewrite_quotes(&s.content, work) {
                s.set_content(new);
            }
        }
    }
}

/// Loads `bytes` (see the module documentation for what holds of the result).
pub fn load(bytes: &[u8], max_decoded: u64) -> Result<Loaded, LoadError> {
    let mut work = Work::default();
    let mut warnings = Vec::new();
    let mut stats = LoadStats::default();
    let scan = scan(bytes, &mut work)?;
    if scan.objects.is_empty() {
        return Err(LoadError::Damaged("no objects found"));
    }
    if let Some(what) = xref_damage(bytes) {
        warnings.push(format!(
            "damaged cross-reference data ({what}); the document was rebuilt by scanning its objects"
        ));
    }
    let mut doc = Document::new();
    doc.version = version(bytes);
    let mut positions = BTreeMap::new();
    for (id, (pos, obj)) in scan.objects {
        positions.insert(id, pos);
        doc.objects.insert(id, obj);
    }
    // Encryption first: stream data is encrypted after it is encoded.
    let encrypt = scan
        .trailers
        .iter()
        .rev()
        .find(|d| d.get(b"Root").is_ok())
        .and_then(|d| d.get(b"Encrypt").ok())
        .cloned();
    if let Some(enc) = encrypt {
        let mut t = scan
            .trailers
            .iter()
            .rev()
            .find(|d| d.get(b"Root").is_ok())
            .cloned()
            .unwrap_or_default();
        if let Object::Dictionary(d) = enc {
            // A direct encryption dictionary: give it an id, as lopdf expects a reference.
            let new_id = (doc.objects.keys().map(|k| k.0).max().unwrap_or(0) + 1, 0);
            doc.objects.insert(new_id, Object::Dictionary(d));
            t.set("Encrypt", Object::Reference(new_id));
        }
        doc.trailer = t;
        doc.authenticate_password("")
            .map_err(|e| LoadError::Encrypted(Some(e)))?;
        let state =
            lopdf::EncryptionState::decode(&doc, "").map_err(|e| LoadError::Encrypted(Some(e)))?;
        let eid = doc
            .trailer
            .get(b"Encrypt")
            .and_then(Object::as_reference)
            .map_err(|_| LoadError::Encrypted(None))?;
        for (&id, obj) in doc.objects.iter_mut() {
            if id != eid && !obj.as_stream().is_ok_and(|s| s.dict.has_type(b"XRef")) {
                let _ = lopdf::encryption::decrypt_object(&state, id, obj);
            }
        }
        doc.trailer.remove(b"Encrypt");
    }
    let mut budget = Budget::new(max_decoded);
    decode_all(&mut doc, &mut budget).map_err(|Exceeded| LoadError::Bomb {
        limit: budget.limit(),
    })?;
    stats.bytes_decoded = budget.used();
    expand_object_streams(&mut doc, &mut positions, &mut work);
    doc.trailer = trailer(&doc, &scan.trailers, &positions, &mut warnings)?;
    doc.trailer.remove(b"Encrypt");
    doc.max_id = doc.objects.keys().map(|k| k.0).max().unwrap_or(0);
    let (pages, pages_node) = flatten_pages(&mut doc, &mut warnings)?;
    rewrite_text_operators(&mut doc, &pages, &mut work);
    let page_costs = guard_forms(&mut doc, &pages, &mut work, &mut stats, &mut warnings)?;
    doc.max_id = doc.objects.keys().map(|k| k.0).max().unwrap_or(0);
    stats.objects = doc.objects.len() as u64;
    stats.bytes_parsed = work.bytes;
    Ok(Loaded {
        doc,
        pages,
        page_costs,
        pages_node,
        warnings,
        stats,
    })
}

//! Stream filters (ISO 32000-1 §7.4) decoded under one byte budget per document.
//!
//! Owns [`Budget`] and [`decode_stream`]. Invariants: every decoder charges the budget for
//! each chunk it produces *before* keeping it, so no decoding ever holds more than the budget
//! (plus one 64 KiB chunk) of output, whatever the filter chain (FlateDecode with or without
//! a zlib header, LZWDecode, ASCII85Decode, ASCIIHexDecode, RunLengthDecode, in any order
//! and repetition); a stream's filters are replaced by the ones left undecoded, which are
//! only image codecs (DCT, JPX, CCITT, JBIG2) that nothing downstream decodes. Damaged data
//! keeps what was decoded before the damage, as other readers do.

use std::io::Read;

use lopdf::{Dictionary, Object, Stream};

/// Bytes of decoded output one document may produce, all streams and filter stages together.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: u64,
    used: u64,
}

/// The budget ran out: the document is a decompression bomb (or unusually large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded;

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget { limit, used: 0 }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn charge(&mut self, n: usize) -> Result<(), Exceeded> {
        self.used = self.used.saturating_add(n as u64);
        if self.used > self.limit {
            Err(Exceeded)
        } else {
            Ok(())
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// Reads `r` to its end or its first error into `out`, charging `budget` per chunk; `Ok(true)`
/// when the data ended cleanly.
fn drain(mut r: impl Read, out: &mut Vec<u8>, budget: &mut Budget) -> Result<bool, Exceeded> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                budget.charge(n)?;
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false),
        }
    }
}

fn zlib_header(d: &[u8]) -> bool {
    d.len() >= 2 && d[0] & 0x0f == 8 && (u16::from(d[0]) << 8 | u16::from(d[1])) % 31 == 0
}

/// FlateDecode: zlib data, or raw deflate (some producers omit the header or write a
/// bogus one), trying the forms readers try.
pub fn flate(input: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Exceeded> {
    let mut out = Vec::new();
    if zlib_header(input) {
        drain(flate2::read::ZlibDecoder::new(input), &mut out, budget)?;
        if !out.is_empty() {
            return Ok(out);
        }
    }
    for skip in [0, 2] {
        out.clear();
        if input.len() <= skip {
            break;
        }
        drain(
            flate2::read::DeflateDecoder::new(&input[skip..]),
            &mut out,
            budget,
        )?;
        if !out.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// LZWDecode (§7.4.4), `/EarlyChange 1` by default.
pub fn lzw(input: &[u8], early_change: bool, budget: &mut Budget) -> Result<Vec<u8>, Exceeded> {
    use weezl::{decode::Decoder, BitOrder, LzwStatus};
    let mut dec = if early_change {
        Decoder::with_tiff_size_switch(BitOrder::Msb, 8)
    } else {
        Decoder::new(BitOrder::Msb, 8)
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut inp = input;
    loop {
        let r = dec.decode_bytes(inp, &mut buf);
        inp = &inp[r.consumed_in.min(inp.len())..];
        budget.charge(r.consumed_out)?;
        out.extend_from_slice(&buf[..r.consumed_out]);
        match r.status {
            Ok(LzwStatus::Ok) if r.consumed_in > 0 || r.consumed_out > 0 => {}
            _ => break,
        }
    }
    Ok(out)
}

/// ASCIIHexDecode (§7.4.2).
pub fn ascii_hex(input: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Exceeded> {
    budget.charge(input.len() / 2 + 1)?;
    let mut out = Vec::with_capacity(input.len() / 2 + 1);
    let mut high: Option<u8> = None;
    for &c in input {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b'>' => break,
            _ => continue,
        };
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    if let Some(h) = high {
        out.push(h << 4);
    }
    Ok(out)
}

/// ASCII85Decode (§7.4.3); `z` stands for four zero bytes.
pub fn ascii85(input: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Exceeded> {
    let mut out = Vec::new();
    let mut group = [0u8; 5];
    let mut n = 0;
    let mut pending = 0usize;
    let body = input.strip_prefix(b"<~").unwrap_or(input);
    for &c in body {
        match c {
            b'~' => break,
            b'z' if n == 0 => {
                out.extend_from_slice(&[0; 4]);
                pending += 4;
            }
            b'!'..=b'u' => {
                group[n] = c - b'!';
                n += 1;
                if n == 5 {
                    let v = group.iter().fold(0u64, |v, &d| v * 85 + u64::from(d));
                    out.extend_from_slice(&(v as u32).to_be_bytes());
                    pending += 4;
                    n = 0;
                }
            }
            _ => {}
        }
        if pending >= CHUNK {
            budget.charge(pending)?;
            pending = 0;
        }
    }
    if n > 1 {
        for g in group.iter_mut().skip(n) {
            *g = 84;
        }
        let v = group.iter().fold(0u64, |v, &d| v * 85 + u64::from(d));
        out.extend_from_slice(&(v as u32).to_be_bytes()[..n - 1]);
        pending += n - 1;
    }
    budget.charge(pending)?;
    Ok(out)
}

/// RunLengthDecode (§7.4.5).
pub fn run_length(input: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Exceeded> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut pending = 0usize;
    while i < input.len() {
        let l = input[i] as usize;
        i += 1;
        match l {
            0..=127 => {
                let end = (i + l + 1).min(input.len());
                out.extend_from_slice(&input[i..end]);
                pending += end - i;
                i = end;
            }
            128 => break,
            _ => {
                let Some(&b) = input.get(i) else { break };
                i += 1;
                out.resize(out.len() + 257 - l, b);
                pending += 257 - l;
            }
        }
        if pending >= CHUNK {
            budget.charge(pending)?;
            pending = 0;
        }
    }
    budget.charge(pending)?;
    Ok(out)
}

fn int(d: Option<&Dictionary>, key: &[u8], default: i64) -> i64 {
    d.and_then(|d| d.get(key).ok())
        .and_then(|o| o.as_i64().ok())
        .unwrap_or(default)
}

/// Undoes a PNG (10-15) or TIFF (2) predictor (§7.4.4.4); the output is never longer than
/// the input. Unknown predictors and impossible parameters leave the data as it is.
pub fn unpredict(data: Vec<u8>, parms: Option<&Dictionary>) -> Vec<u8> {
    let predictor = int(parms, b"Predictor", 1);
    if predictor < 2 {
        return data;
    }
    let colors = int(parms, b"Colors", 1).clamp(1, 32) as usize;
    let bpc = int(parms, b"BitsPerComponent", 8).clamp(1, 16) as usize;
    let columns = int(parms, b"Columns", 1).clamp(1, 1 << 20) as usize;
    let bpp = (colors * bpc).div_ceil(8).max(1);
    let row = (colors * bpc * columns).div_ceil(8);
    if predictor == 2 {
        if bpc != 8 {
            return data;
        }
        let mut data = data;
        for r in data.chunks_mut(row) {
            for i in bpp..r.len() {
                r[i] = r[i].wrapping_add(r[i - bpp]);
            }
        }
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut prev = vec![0u8; row];
    for chunk in data.chunks(row + 1) {
        let (tag, src) = (chunk[0], &chunk[1..]);
        let mut cur = vec![0u8; row];
        for i in 0..src.len() {
            let left = if i >= bpp { cur[i - bpp] } else { 0 };
            let up = prev[i];
            let ul = if i >= bpp { prev[i - bpp] } else { 0 };
            cur[i] = match tag {
                1 => src[i].wrapping_add(left),
                2 => src[i].wrapping_add(up),
                3 => src[i].wrapping_add(((u16::from(left) + u16::from(up)) / 2) as u8),
                4 => {
                    let p = i16::from(left) + i16::from(up) - i16::from(ul);
                    let (pa, pb, pc) = (
                        (p - i16::from(left)).abs(),
                        (p - i16::from(up)).abs(),
                        (p - i16::from(ul)).abs(),
                    );
                    let pred = if pa <= pb && pa <= pc {
                        left
                    } else if pb <= pc {
                        up
                    } else {
                        ul
                    };
                    src[i].wrapping_add(pred)
                }
                _ => src[i],
            };
        }
        out.extend_from_slice(&cur[..src.len()]);
        prev = cur;
    }
    out
}

fn names(o: Option<&Object>) -> Vec<Vec<u8>> {
    match o {
        Some(Object::Name(n)) => vec![n.clone()],
        Some(Object::Array(a)) => a
            .iter()
            .map(|x| x.as_name().map(<[u8]>::to_vec).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

fn parms_list(o: Option<&Object>, n: usize) -> Vec<Option<Dictionary>> {
    match o {
        Some(Object::Dictionary(d)) => {
            let mut v = vec![None; n];
            if let Some(first) = v.first_mut() {
                *first = Some(d.clone());
            }
            v
        }
        Some(Object::Array(a)) => (0..n)
            .map(|i| a.get(i).and_then(|x| x.as_dict().ok()).cloned())
            .collect(),
        _ => vec![None; n],
    }
}

/// Decodes `stream` through every filter of its chain that ttpmap implements, in order,
/// stopping at the first it does not (an image codec); the stream is left with the rest of
/// the chain. `Filter` and `DecodeParms` must be direct (the loader resolves them).
pub fn decode_stream(stream: &mut Stream, budget: &mut Budget) -> Result<(), Exceeded> {
    let filters = names(stream.dict.get(b"Filter").ok());
    if filters.is_empty() {
        stream.dict.remove(b"Filter");
        stream.dict.remove(b"DecodeParms");
        return Ok(());
    }
    let parms = parms_list(stream.dict.get(b"DecodeParms").ok(), filters.len());
    let mut data = std::mem::take(&mut stream.content);
    let mut done = 0;
    for (f, p) in filters.iter().zip(&parms) {
        let p = p.as_ref();
        data = match f.as_slice() {
            b"FlateDecode" | b"Fl" => unpredict(flate(&data, budget)?, p),
            b"LZWDecode" | b"LZW" => {
                unpredict(lzw(&data, int(p, b"EarlyChange", 1) != 0, budget)?, p)
            }
            b"ASCII85Decode" | b"A85" => ascii85(&data, budget)?,
            b"ASCIIHexDecode" | b"AHx" => ascii_hex(&data, budget)?,
            b"RunLengthDecode" | b"RL" => run_length(&data, budget)?,
            // Decryption happened before decoding.
            b"Crypt" => data,
            _ => break,
        };
        done += 1;
    }
    let rest: Vec<Object> = filters[done..]
        .iter()
        .map(|n| Object::Name(n.clone()))
        .collect();
    let rest_parms: Vec<Object> = parms[done..]
        .iter()
        .map(|p| p.clone().map_or(Object::Null, Object::Dictionary))
        .collect();
    stream.set_plain_content(data);
    if !rest.is_empty() {
        stream.dict.set("Filter", Object::Array(rest));
        stream.dict.set("DecodeParms", Object::Array(rest_parms));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn each_decoder_round_trips() {
        let mut b = Budget::new(1 << 20);
        assert_eq!(flate(&zlib(b"hello"), &mut b).unwrap(), b"hello");
        assert_eq!(flate(&raw(b"hello"), &mut b).unwrap(), b"hello");
        let mut bogus = b"\0\0".to_vec();
        bogus.extend(raw(b"hello"));
        assert_eq!(flate(&bogus, &mut b).unwrap(), b"hello");
        assert_eq!(ascii_hex(b"68 65 6C6c 6>", &mut b).unwrap(), b"hell`");
        assert_eq!(ascii85(b"<~87cURDZ~>", &mut b).unwrap(), b"Hello");
        assert_eq!(ascii85(b"z!!~>", &mut b).unwrap(), [0, 0, 0, 0, 0]);
        assert_eq!(
            run_length(&[2, b'a', b'b', b'c', 253, b'x', 128], &mut b).unwrap(),
            b"abcxxxx"
        );
        let enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(b"abababababab")
            .unwrap();
        assert_eq!(lzw(&enc, true, &mut b).unwrap(), b"abababababab");
    }

    #[test]
    fn every_decoder_stops_at_the_budget() {
        let zeros = vec![0u8; 8 << 20];
        for (name, data) in [("zlib", zlib(&zeros)), ("raw", raw(&zeros))] {
            let mut b = Budget::new(1 << 20);
            assert_eq!(flate(&data, &mut b), Err(Exceeded), "{name}");
            assert!(b.used() <= (1 << 20) + CHUNK as u64, "{name}: {}", b.used());
        }
        let enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(&zeros)
            .unwrap();
        assert_eq!(lzw(&enc, true, &mut Budget::new(1 << 20)), Err(Exceeded));
        let zs = vec![b'z'; 2 << 20];
        assert_eq!(ascii85(&zs, &mut Budget::new(1 << 20)), Err(Exceeded));
        let runs: Vec<u8> = [129u8, 0].repeat(1 << 16);
        assert_eq!(run_length(&runs, &mut Budget::new(1 << 20)), Err(Exceeded));
    }

    #[test]
    fn chains_decode_in_order_and_leave_image_codecs() {
        let inner = zlib(b"BT (chained) Tj ET");
        let hex: String = inner.iter().map(|b| format!("{b:02x}")).collect();
        let mut d = Dictionary::new();
        d.set(
            "Filter",
            Object::Array(vec![
                Object::Name(b"AHx".to_vec()),
                Object::Name(b"FlateDecode".to_vec()),
                Object::Name(b"DCTDecode".to_vec()),
            ]),
        );
        let mut s = Stream::new(d, hex.into_bytes());
        decode_stream(&mut s, &mut Budget::new(1 << 20)).unwrap();
        assert_eq!(s.content, b"BT (chained) Tj ET");
        assert_eq!(
            s.dict.get(b"Filter").unwrap().as_array().unwrap()[0]
                .as_name()
                .unwrap(),
            b"DCTDecode"
        );
    }

    #[test]
    fn png_predictor() {
        // Two rows of 3 bytes, `Up` filter on the second.
        let data = vec![0, 1, 2, 3, 2, 1, 1, 1];
        let mut p = Dictionary::new();
        p.set("Predictor", 12);
        p.set("Columns", 3);
        assert_eq!(unpredict(data, Some(&p)), vec![1, 2, 3, 2, 3, 4]);
    }
}

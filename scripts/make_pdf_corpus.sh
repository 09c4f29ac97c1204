#!/usr/bin/env bash
# Regenerates the PDF regression corpus in crates/ttpmap-core/tests/fixtures/pdf/ and,
# with `compare`, the table of words recovered by ttpmap vs `pdftotext -layout`.
#
#   scripts/make_pdf_corpus.sh            # (re)make the fixtures (needs the producers below)
#   scripts/make_pdf_corpus.sh compare    # word table (needs cargo and poppler-utils)
#   scripts/make_pdf_corpus.sh bomb F.pdf # issue 11 row 2: \0\0 + raw deflate of 600 MiB
#                                         # (and F.a85.pdf, the same under ASCII85+Flate);
#                                         # not committed, for measuring by hand
#
# Producers (Debian packages): ghostscript, qpdf, poppler-utils, mupdf-tools, groff,
# texlive-latex-base, chromium, libreoffice-writer-nogui. A producer that is missing is
# skipped with a note; the tests only read the committed files. Each NAME.pdf has a
# NAME.txt beside it: phrases that must come out of the text, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=crates/ttpmap-core/tests/fixtures/pdf
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
have() { command -v "$1" >/dev/null 2>&1; }
export SOURCE_DATE_EPOCH=1700000000 FORCE_SOURCE_DATE=1

P1="Operation Harbor Lantern began with a spearphishing attachment."
P2="The macro launched PowerShell with an encoded command."
P3="Persistence used a scheduled task named LanternSync."
P4="Archives were exfiltrated over HTTPS to 198.51.100.23."
PHRASES=("spearphishing attachment" "launched PowerShell" "scheduled task named LanternSync" "198.51.100.23")

expect() { printf '%s\n' "${PHRASES[@]}" > "$OUT/$1.txt"; }

compare() {
  have pdftotext || { echo "pdftotext (poppler-utils) is needed" >&2; exit 1; }
  mkdir -p "$TMP/ttpmap"
  TTPMAP_PDF_TEXT_OUT="$TMP/ttpmap" cargo test -q -p ttpmap-core --test it \
    ingest::pdf::dump_corpus_text -- --ignored >/dev/null
  python3 - "$OUT" "$TMP/ttpmap" <<'PY'
import collections, pathlib, re, subprocess, sys
src, got = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
words = lambda s: collections.Counter(re.findall(r"[a-z0-9]+", s.lower()))
print("| file | pdftotext -layout words | ttpmap words | pdftotext words also in ttpmap |")
print("|---|---:|---:|---:|")
for pdf in sorted(src.glob("*.pdf")):
    r = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True)
    ref = words(r.stdout) if r.returncode == 0 else collections.Counter()
    t = got / (pdf.stem + ".txt")
    ours = words(t.read_text()) if t.exists() else collections.Counter()
    common = sum((ref & ours).values())
    total = sum(ref.values())
    pct = f"{100 * common / total:.0f}%" if total else "-"
    note = "" if r.returncode == 0 else f" (pdftotext failed: exit {r.returncode})"
    print(f"| {pdf.name} | {total}{note} | {sum(ours.values()) if t.exists() else 'error'} | {common} ({pct}) |")
PY
}

bomb() {
  python3 - "$1" <<'PY'
import base64, sys, zlib
out = sys.argv[1]
c = zlib.compressobj(9, zlib.DEFLATED, -15)
zero = bytes(1 << 20)
body = b"\0\0" + b"".join(c.compress(zero) for _ in range(600)) + c.flush()
def pdf(data, filt):
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length %d /Filter %s >>\nstream\n" % (len(data), filt) + data + b"\nendstream"]
    b = bytearray(b"%PDF-1.4\n"); offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(b)); b += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    x = len(b)
    b += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offs)
    b += b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % x
    return bytes(b)
open(out, "wb").write(pdf(body, b"/FlateDecode"))
a85 = base64.a85encode(body, adobe=True)[2:]
open(out[:-4] + ".a85.pdf", "wb").write(pdf(a85, b"[/ASCII85Decode /FlateDecode]"))
PY
}

if [ "${1:-}" = compare ]; then compare; exit 0; fi
if [ "${1:-}" = bomb ]; then bomb "${2:?output file}"; exit 0; fi

# --- Ghostscript: PostScript with a standard font (embedded as CFF / Type1C) ------------
cat > "$TMP/text.ps" <<PS
%!PS
/Times-Roman findfont 12 scalefont setfont
72 720 moveto ($P1) show
72 704 moveto ($P2) show
72 688 moveto ($P3) show
72 672 moveto ($P4) show
showpage
PS
if have gs; then
  gs -q -dNOPAUSE -dBATCH -dSAFER -sDEVICE=pdfwrite -dEmbedAllFonts=true -dSubsetFonts=true \
     -dCompressFonts=true -sOutputFile="$OUT/ghostscript_cff.pdf" "$TMP/text.ps"
  expect ghostscript_cff
  # Type3: a user-defined font whose glyphs are drawn boxes, with standard glyph names.
  cat > "$TMP/type3.ps" <<'PS'
%!PS
/T3 8 dict dup begin
  /FontType 3 def /FontMatrix [0.001 0 0 0.001 0 0] def /FontBBox [0 0 600 700] def
  /Encoding StandardEncoding def
  /BuildChar { pop pop 600 0 0 0 500 700 setcachedevice 50 0 moveto 450 0 lineto 450 700 lineto 50 700 lineto closepath fill } def
end definefont pop
/T3 findfont 12 scalefont setfont
72 720 moveto (Type three glyphs spell LanternSync beacon) show
showpage
PS
  gs -q -dNOPAUSE -dBATCH -dSAFER -sDEVICE=pdfwrite -sOutputFile="$OUT/ghostscript_type3.pdf" "$TMP/type3.ps"
  printf '%s\n' "Type three glyphs spell LanternSync beacon" > "$OUT/ghostscript_type3.txt"
else echo "skip: ghostscript" >&2; fi

# --- groff (gropdf): embedded Type1 fonts -------------------------------------------------
if have groff && echo | groff -Tpdf >/dev/null 2>&1; then
  printf '.ft R\n%s\n%s\n.sp\n%s\n%s\n' "$P1" "$P2" "$P3" "$P4" | groff -Tpdf -P-pletter > "$OUT/groff_type1.pdf"
  expect groff_type1
else echo "skip: groff" >&2; fi

# --- pdfTeX --------------------------------------------------------------------------------
if have pdflatex; then
  cat > "$TMP/r.tex" <<TEX
\\documentclass{article}\\pdfcompresslevel=9\\begin{document}
$P1 $P2

$P3 $P4
\\end{document}
TEX
  (cd "$TMP" && pdflatex -interaction=batchmode r.tex >/dev/null) && cp "$TMP/r.pdf" "$OUT/pdftex.pdf" && expect pdftex
else echo "skip: pdflatex" >&2; fi

# --- Chromium print-to-PDF (TrueType as CID fonts with ToUnicode) ---------------------------
CHROME=$(command -v chromium || command -v chromium-browser || true)
if [ -n "$CHROME" ]; then
  printf '<!doctype html><meta charset=utf-8><title>Harbor Lantern</title><body style="font-family:DejaVu Sans"><h1>Harbor Lantern</h1><p>%s %s</p><p>%s %s</p>' \
    "$P1" "$P2" "$P3" "$P4" > "$TMP/r.html"
  "$CHROME" --headless --no-sandbox --disable-gpu --no-pdf-header-footer \
    --print-to-pdf="$OUT/chromium.pdf" "file://$TMP/r.html" >/dev/null 2>&1
  expect chromium
else echo "skip: chromium" >&2; fi

# --- LibreOffice -----------------------------------------------------------------------------
SOFFICE=$(command -v soffice || command -v libreoffice || true)
if [ -n "$SOFFICE" ]; then
  printf '%s %s\n\n%s %s\n' "$P1" "$P2" "$P3" "$P4" > "$TMP/libreoffice.txt"
  (cd "$TMP" && HOME="$TMP" "$SOFFICE" --headless --convert-to pdf libreoffice.txt >/dev/null 2>&1)
  cp "$TMP/libreoffice.pdf" "$OUT/libreoffice.pdf" && expect libreoffice
else echo "skip: libreoffice" >&2; fi

# --- MuPDF: base-14 font, not embedded -----------------------------------------------------
if have mutool; then
  cat > "$TMP/page.txt" <<MU
%%MediaBox 0 0 612 792
%%Font F1 Helvetica
BT /F1 11 Tf 72 720 Td 14 TL ($P1) Tj T* ($P2) Tj T* ($P3) Tj T* ($P4) Tj ET
MU
  mutool create -O compress -o "$OUT/mupdf_base14.pdf" "$TMP/page.txt"
  expect mupdf_base14
else echo "skip: mupdf-tools" >&2; fi

# --- qpdf: object streams + xref stream, linearized, encrypted (empty user password) ----------
if have qpdf && [ -f "$OUT/ghostscript_cff.pdf" ]; then
  qpdf --object-streams=generate "$OUT/ghostscript_cff.pdf" "$OUT/qpdf_object_streams.pdf"
  expect qpdf_object_streams
  qpdf --linearize "$OUT/ghostscript_cff.pdf" "$OUT/qpdf_linearized.pdf"
  expect qpdf_linearized
  qpdf --object-streams=generate --encrypt "" owner-secret 256 -- "$OUT/ghostscript_cff.pdf" "$OUT/qpdf_encrypted_aes256.pdf"
  expect qpdf_encrypted_aes256
  qpdf --allow-weak-crypto --encrypt "" owner-secret 128 --use-aes=n -- "$OUT/ghostscript_cff.pdf" "$OUT/qpdf_encrypted_rc4.pdf"
  expect qpdf_encrypted_rc4
  # No ToUnicode maps: the text comes from the font encodings alone.
  qpdf --qdf --object-streams=disable "$OUT/ghostscript_cff.pdf" "$TMP/q.pdf"
  python3 - "$TMP/q.pdf" "$TMP/q2.pdf" <<'PY'
import re, sys
b = open(sys.argv[1], "rb").read()
b = re.sub(rb"/ToUnicode \d+ 0 R", b"", b)
open(sys.argv[2], "wb").write(b)
PY
  fix-qdf "$TMP/q2.pdf" > "$TMP/q3.pdf" && qpdf "$TMP/q3.pdf" "$OUT/no_tounicode.pdf"
  expect no_tounicode
else echo "skip: qpdf" >&2; fi

# --- Hand-made damage and edge cases (Python, from the files above or from scratch) -----------
python3 - "$OUT" <<'PY'
import pathlib, re, sys, zlib
out = pathlib.Path(sys.argv[1])
P = ["Operation Harbor Lantern began with a spearphishing attachment.",
     "The macro launched PowerShell with an encoded command.",
     "Persistence used a scheduled task named LanternSync.",
     "Archives were exfiltrated over HTTPS to 198.51.100.23."]
phr = ["spearphishing attachment", "launched PowerShell", "scheduled task named LanternSync", "198.51.100.23"]

def write(objs, trailer=b"", xref=True):
    b = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(b))
        b += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    x = len(b)
    b += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        b += b"%010d 00000 n \n" % o
    b += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, trailer, x)
    return bytes(b)

def stream(data, extra=b""):
    z = zlib.compress(data, 9)
    return b"<< /Length %d /Filter /FlateDecode%s >>\nstream\n" % (len(z), extra) + z + b"\nendstream"

def text_content(lines):
    c = b"BT /F1 11 Tf 14 TL 72 720 Td\n"
    for l in lines:
        c += b"(" + l.encode() + b") Tj T*\n"
    return c + b"ET\n"

def simple(lines_per_page):
    n = len(lines_per_page)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(n)), n),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i, lines in enumerate(lines_per_page):
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objs.append(stream(text_content(lines)))
    return objs

def expect(name, lines):
    (out / (name + ".txt")).write_text("".join(l + "\n" for l in lines))

# Real failure 1: lopdf's "invalid start value": the end-of-file marker is not within the last
# 512 bytes (padding after %%EOF, as some download tools and signing workflows leave).
good = write(simple([P]))
(out / "xref_trailing_padding.pdf").write_bytes(good + b"\0" * 1024)
expect("xref_trailing_padding", phr)
# startxref points at the wrong offset (a file edited by hand or re-saved badly).
bad = re.sub(rb"startxref\n(\d+)", lambda m: b"startxref\n%d" % (int(m.group(1)) - 37), good)
(out / "xref_wrong_offset.pdf").write_bytes(bad)
expect("xref_wrong_offset", phr)
# The xref subsection header is garbage (same length, so startxref still points at it).
i = good.index(b"xref\n0 ") + 5
(out / "xref_garbled_table.pdf").write_bytes(good[:i] + b"Q-" + good[i + 2:])
expect("xref_garbled_table", phr)

# Real failure 2: a page whose font makes pdf-extract 0.12 panic (a Type0 font with a
# predefined CJK CMap, /UniGB-UCS2-H, valid PDF that pdf-extract does not support), next to
# a good page: only that page is lost.
objs = simple([P, ["This page uses a CJK font."]])
objs.append(b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H /DescendantFonts [9 0 R] >>")
objs.append(b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 4 >> /FontDescriptor 10 0 R /DW 1000 >>")
objs.append(b"<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [0 -200 1000 900] /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>")
objs[5] = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R /F2 8 0 R >> >> /Contents 7 0 R >>"
objs[6] = stream(b"BT /F1 11 Tf 72 720 Td (This page uses a CJK font.) Tj ET BT /F2 11 Tf 72 700 Td <4E2D6587> Tj ET\n")
(out / "panic_page_cjk_cmap.pdf").write_bytes(write(objs))
expect("panic_page_cjk_cmap", phr)

# Incremental update: page content replaced in an appended revision.
base = write(simple([["Draft text that was replaced."]]))
x0 = int(re.findall(rb"startxref\n(\d+)", base)[-1])
upd = bytearray(base)
off = len(upd)
upd += b"5 0 obj\n" + stream(text_content(P)) + b"\nendobj\n"
x = len(upd)
upd += b"xref\n0 1\n0000000000 65535 f \n5 1\n%010d 00000 n \ntrailer\n<< /Size 6 /Root 1 0 R /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (off, x0, x)
(out / "incremental_update.pdf").write_bytes(bytes(upd))
expect("incremental_update", phr)

# Filters: content under [/ASCII85Decode /FlateDecode], LZW-free (no encoder here), RunLength.
import base64
c = text_content(P)
a85 = base64.a85encode(zlib.compress(c, 9), adobe=True)[2:]
objs = simple([P])
objs[4] = b"<< /Length %d /Filter [/ASCII85Decode /FlateDecode] >>\nstream\n" % len(a85) + a85 + b"\nendstream"
(out / "filters_a85_flate.pdf").write_bytes(write(objs))
expect("filters_a85_flate", phr)
PY
ls -la "$OUT"

// ttpmap review UI: plain JavaScript, no build step, no external resources.
// Report text is untrusted: everything is inserted with textContent, never innerHTML.
//
// Views of one report: the sentences (kept in their blocks: headings, paragraphs, list items,
// table rows, code, from the API's `block` and `line`) and the matrix (ATT&CK tactics as
// columns, in the catalog's matrix order from GET /v1/tactics). Review: accept / reject per
// prediction, "unreviewed only", "next unreviewed", bulk accept above a confidence, keys
// j/k/a/r/n/m, a progress count. A preview (POST /v1/extract, nothing stored) shows the same
// views without the review controls, and the export buttons are disabled.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  report: null, selected: null, focus: 0, min: 0, preview: false,
  view: "text", unreviewedOnly: false, tactics: [], cycle: new Map(), busy: false,
};
const EXPORTS = ["navigator", "stix", "misp", "json", "csv", "markdown"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function token() { return localStorage.getItem("ttpmap.token") || ""; }

async function api(method, path, body, headers) {
  const h = Object.assign({}, headers || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  const resp = await fetch(path, { method, headers: h, body });
  const ct = resp.headers.get("content-type") || "";
  const data = ct.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const msg = (data && data.error) ? data.error : String(data);
    throw new Error(resp.status + " " + msg);
  }
  return data;
}

function status(msg, isError) {
  const s = $("status");
  s.textContent = msg;
  s.className = isError ? "error" : "muted";
}

// Confidence bands on the calibrated scale (a score is the estimated chance that the technique
// is right; the default model keeps predictions from 0.36, and a technique's best sentence
// carries the document's confidence, which several sentences raise):
// high >= 0.60 (probably right), medium 0.40-0.60 (a coin flip), low < 0.40 (probably wrong,
// read the sentence). Analyst additions are "added".
function level(t) {
  if (t.origin === "analyst") return "added";
  return t.score >= 0.6 ? "high" : t.score >= 0.4 ? "mid" : "low";
}

const isModel = (t) => t.origin !== "analyst";
const unreviewed = (t) => isModel(t) && t.status === "predicted";

// Shown in the sentence view and the summary: not rejected, above the slider; with
// "unreviewed only", only predictions that still need a decision.
function visible(t) {
  if (state.unreviewedOnly) return unreviewed(t) && t.score >= state.min;
  return t.status !== "rejected" && (t.origin === "analyst" || t.score >= state.min);
}

// A title for people: never the "<text>" placeholder of a pasted report.
function displayTitle(r) {
  if (r.title) return r.title;
  if (r.source && !r.source.startsWith("<")) return r.source;
  return "Untitled report";
}

function guessFormat(text) {
  const chosen = $("format").value;
  if (chosen !== "auto") return chosen;
  if (/^\s*<(!doctype html|html[\s>])/i.test(text)) return "html";
  const md = /^#{1,6}\s+\S/m.test(text) || /^\s*\|.+\|\s*$/m.test(text) ||
    /\[[^\]]+\]\([^)]+\)/.test(text) || /^```/m.test(text) || /^\s*[-*+]\s+\S/m.test(text);
  return md ? "markdown" : "text";
}

function uploadBody() {
  const file = $("file").files[0];
  const title = $("title").value.trim();
  if (file) {
    const fd = new FormData();
    fd.append("file", file, file.name);
    if (title) fd.append("title", title);
    return [fd, {}];
  }
  const text = $("text").value;
  if (!text.trim()) throw new Error("paste a report or choose a file first");
  const payload = { text, format: guessFormat(text) };
  if (title) payload.title = title;
  return [JSON.stringify(payload), { "Content-Type": "application/json" }];
}

async function submit() {
  try {
    const [body, headers] = uploadBody();
    status("Analysing…");
    const report = await api("POST", "/v1/reports", body, headers);
    state.preview = false;
    state.selected = null;
    status("Stored as report " + report.id + ".");
    show(report);
    loadReports();
  } catch (e) { status(e.message, true); }
}

// Extract without storing (read-only servers): the same views, no review controls. Names and
// tactics come from the extraction's document summary.
async function preview() {
  try {
    const [body, headers] = uploadBody();
    status("Analysing…");
    const x = await api("POST", "/v1/extract?sentences=all", body, headers);
    const bySentence = new Map(x.sentences.map((s) => [s.sentence, s.predictions]));
    const meta = new Map(x.techniques.map((t) => [t.technique, t]));
    state.preview = true;
    state.selected = null;
    show({
      id: null, title: x.title, source: x.source, techniques: x.techniques,
      sentences: x.document.sentences.map((s) => ({
        index: s.index, text: s.text, block: s.block, line: s.line,
        techniques: (bySentence.get(s.index) || []).map((p) => {
          const m = meta.get(p.technique) || {};
          return { technique: p.technique, name: m.name || "", tactics: m.tactics || [],
            score: p.score, evidence: p.evidence, origin: "model", status: "predicted" };
        }),
      })),
    });
    status("Preview (not stored): reviewing and exports need a stored report.");
  } catch (e) { status(e.message, true); }
}

async function loadReports() {
  try {
    const data = await api("GET", "/v1/reports?limit=50");
    const ul = $("reports");
    ul.replaceChildren();
    for (const r of data.reports) {
      ul.append(el("li", { dataset: { id: r.id }, onclick: () => openReport(r.id) },
        "#" + r.id + " " + displayTitle(r) + " ",
        el("span", { class: "muted" }, r.predictions + " predictions, " + r.reviews + " reviews")));
    }
  } catch (e) { status(e.message, true); }
}

async function openReport(id) {
  try {
    state.preview = false;
    state.selected = null;
    show(await api("GET", "/v1/reports/" + id));
  } catch (e) { status(e.message, true); }
}

function show(report) {
  state.report = report;
  state.cycle = new Map();
  state.focus = 0;
  $("report-pane").hidden = false;
  $("report-title").textContent = (report.id ? "#" + report.id + " " : "") + displayTitle(report) +
    (state.preview ? " (preview)" : "");
  $("report-title").dataset.preview = String(state.preview);
  for (const f of EXPORTS) {
    const b = $("export-" + f);
    b.disabled = !report.id;
    b.title = report.id ? "Download the reviewed result as " + f : "Store the report to export it";
  }
  for (const id of ["next-unreviewed", "bulk-accept", "bulk-min", "only-unreviewed"]) $(id).disabled = state.preview;
  render();
}

function render() {
  renderView();
  renderText();
  renderMatrix();
  renderTactics();
  renderPanel();
  renderProgress();
}

function renderView() {
  const matrix = state.view === "matrix";
  $("report-text").hidden = matrix;
  $("matrix-pane").hidden = !matrix;
  $("columns").classList.toggle("matrix-mode", matrix);
  document.querySelector("main").classList.toggle("wide", matrix);
  for (const [id, on] of [["view-text", !matrix], ["view-matrix", matrix]]) {
    $(id).classList.toggle("active", on);
    $(id).setAttribute("aria-selected", String(on));
  }
}

function setView(view) {
  state.view = view;
  renderView();
}

// One element per sentence, inside its block: consecutive sentences on one `line` share a
// block; consecutive list items share a list and table rows a table.
function renderText() {
  const art = $("report-text");
  art.replaceChildren();
  let block = null;      // element holding the current line's sentences
  let line = null;
  let container = null;  // current <ul> or <tbody>
  let containerKind = null;
  for (const s of state.report.sentences) {
    const kind = s.block || "paragraph";
    const newLine = s.line === undefined ? true : s.line !== line;
    line = s.line;
    if (newLine || !block) {
      if (kind === "list_item") {
        if (containerKind !== "list_item") { container = el("ul"); art.append(container); containerKind = kind; }
        block = el("li");
        container.append(block);
      } else if (kind === "table_row") {
        if (containerKind !== "table_row") {
          container = el("tbody");
          art.append(el("table", {}, container));
          containerKind = kind;
        }
        block = null; // the row is the sentence element (below)
      } else {
        containerKind = null;
        block = kind === "heading" ? el("h3", { class: "b-heading" }) : kind === "code" ? el("pre") : el("p");
        art.append(block);
      }
    }
    if (kind === "table_row" && (newLine || !block)) {
      block = sentenceElement(s, "table_row");
      container.append(block);
    } else if (kind === "table_row") {
      // A second sentence on the same row: inside the row's last cell.
      block.lastChild.append(" ", sentenceElement(s, "inline"));
    } else {
      block.append(sentenceElement(s, kind), " ");
    }
  }
}

function sentenceElement(s, kind) {
  let e;
  if (kind === "table_row") {
    e = el("tr", { class: "sentence", dataset: { index: s.index } },
      ...s.text.split(" | ").map((c) => el("td", {}, c)));
  } else {
    e = el("span", { class: "sentence", dataset: { index: s.index } }, s.text);
  }
  const shown = s.techniques.filter(visible);
  if (shown.length) {
    const best = shown.reduce((a, b) => (b.score > a.score ? b : a));
    e.classList.add("has", level(best));
    if (s.techniques.filter(isModel).every((t) => !unreviewed(t))) e.classList.add("reviewed");
    e.title = shown.map((t) => t.technique + " " + t.score.toFixed(2) + " " + t.status).join(", ");
    const tag = el("span", { class: "tag" }, shown.map((t) => t.technique).join(" "));
    (kind === "table_row" ? e.lastChild : e).append(tag);
  }
  if (state.selected === s.index) e.classList.add("selected");
  e.addEventListener("click", () => select(s.index, 0));
  return e;
}

function sentenceEl(index) {
  return document.querySelector("#report-text .sentence[data-index='" + index + "']");
}

function select(index, focus, scroll) {
  const prev = state.selected;
  state.selected = index;
  state.focus = focus || 0;
  if (prev !== null && prev !== undefined) {
    const p = sentenceEl(prev);
    if (p) p.classList.remove("selected", "flash");
  }
  const e = sentenceEl(index);
  if (e) {
    e.classList.add("selected");
    if (scroll) {
      // Scroll the sentence list only (not the page), to put the sentence in its middle.
      const art = $("report-text");
      const off = e.getBoundingClientRect().top - art.getBoundingClientRect().top;
      art.scrollTop += off - art.clientHeight / 2 + e.getBoundingClientRect().height / 2;
      e.classList.remove("flash");
      void e.offsetWidth; // restart the animation
      e.classList.add("flash");
    }
  }
  renderPanel();
}

// Technique -> its tactics and best state over the report.
function techniqueSummary() {
  const byId = new Map();
  for (const s of state.report.sentences) {
    for (const t of s.techniques) {
      let x = byId.get(t.technique);
      if (!x) {
        x = { technique: t.technique, name: t.name, tactics: t.tactics || [], score: 0, origin: t.origin,
          statuses: [], sentences: [] };
        byId.set(t.technique, x);
      }
      if (!x.name && t.name) x.name = t.name;
      if (!x.tactics.length && t.tactics && t.tactics.length) x.tactics = t.tactics;
      if (t.score > x.score) x.score = t.score;
      if (t.origin === "model") x.origin = "model";
      x.statuses.push(t.status);
      x.sentences.push(s.index);
    }
  }
  for (const x of byId.values()) {
    const st = x.statuses;
    x.review = st.includes("predicted") ? "unreviewed"
      : st.some((v) => v === "accepted" || v === "added") ? "accepted" : "rejected";
  }
  return byId;
}

function tacticName(short) {
  const t = state.tactics.find((x) => x.shortname === short);
  return t ? t.name : short.replace(/-/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
}

// In the matrix and the summary: above the slider; "unreviewed only" keeps those with an
// open decision.
function matrixVisible(x) {
  if (state.unreviewedOnly) return x.review === "unreviewed" && x.score >= state.min;
  return x.origin === "analyst" || x.score >= state.min;
}

// A column's cells as ATT&CK Navigator lays them out: each parent technique followed by its
// sub-techniques (marked `nested` when the parent is in the column too), groups by their best
// score, a group's sub-techniques by score.
function nestSubTechniques(cells) {
  const parentOf = (t) => t.split(".")[0];
  const groups = new Map();
  for (const x of cells) {
    const p = parentOf(x.technique);
    if (!groups.has(p)) groups.set(p, []);
    groups.get(p).push(x);
  }
  const best = (xs) => Math.max(...xs.map((x) => x.score));
  const out = [];
  for (const xs of [...groups.values()].sort((a, b) => best(b) - best(a))) {
    const parent = xs.find((x) => !x.technique.includes("."));
    const subs = xs.filter((x) => x !== parent).sort((a, b) => b.score - a.score);
    if (parent) out.push({ ...parent, nested: false });
    for (const x of subs) out.push({ ...x, nested: !!parent });
  }
  return out;
}

function renderMatrix() {
  const m = $("matrix");
  m.replaceChildren();
  const summary = [...techniqueSummary().values()].filter(matrixVisible);
  const columns = state.tactics.map((t) => ({ short: t.shortname, name: t.name, id: t.id }));
  const known = new Set(columns.map((c) => c.short));
  for (const x of summary) {
    for (const tac of x.tactics) {
      if (!known.has(tac)) { known.add(tac); columns.push({ short: tac, name: tacticName(tac), id: "" }); }
    }
  }
  const untagged = summary.filter((x) => !x.tactics.length);
  if (untagged.length) columns.push({ short: "", name: "Other", id: "" });
  for (const c of columns) {
    const cells = nestSubTechniques(summary.filter((x) => (c.short ? x.tactics.includes(c.short) : !x.tactics.length)));
    const col = el("section", { class: "mcol" + (cells.length ? "" : " empty"), dataset: { tactic: c.short },
      title: c.name + (c.id ? " (" + c.id + ")" : "") },
      el("h4", {}, c.name, cells.length ? el("span", { class: "count" }, cells.length + " technique" + (cells.length > 1 ? "s" : "")) : ""));
    for (const x of cells) {
      const mark = x.review === "accepted" ? "✓" : x.review === "rejected" ? "✗" : "•";
      col.append(el("div", {
        class: "cell " + level(x) + " " + x.review + (x.nested ? " sub" : ""), role: "button", tabindex: "0",
        dataset: { technique: x.technique, review: x.review },
        title: x.technique + " " + (x.name || "") + ": best " + x.score.toFixed(2) + ", " + x.review +
          ", " + x.sentences.length + " sentence" + (x.sentences.length > 1 ? "s" : "") + " (click for evidence)",
        onclick: () => jumpTo(x.technique),
        onkeydown: (ev) => { if (ev.key === "Enter") jumpTo(x.technique); },
      }, el("span", { class: "mark" }, mark), el("span", { class: "id" }, x.technique), x.name || ""));
    }
    m.append(col);
  }
}

function renderTactics() {
  const summary = [...techniqueSummary().values()].filter(matrixVisible);
  const order = state.tactics.map((t) => t.shortname);
  const groups = new Map();
  for (const x of summary) {
    for (const tac of (x.tactics.length ? x.tactics : [""])) {
      if (!groups.has(tac)) groups.set(tac, []);
      groups.get(tac).push(x);
    }
  }
  const rank = (t) => (t === "" ? 1e6 : order.includes(t) ? order.indexOf(t) : 1e5);
  const div = $("tactics");
  div.replaceChildren();
  if (!groups.size) div.append(el("p", { class: "muted" }, "No technique at this confidence."));
  for (const [tac, xs] of [...groups].sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]))) {
    const ul = el("ul");
    for (const x of xs.sort((a, b) => b.score - a.score)) {
      const n = x.sentences.length;
      ul.append(el("li", { dataset: { technique: x.technique }, class: x.review, title: "Jump to the evidence",
        onclick: () => jumpTo(x.technique) },
        el("span", { class: "id" }, x.technique), " " + (x.name || "") + " ",
        el("span", { class: "muted" }, x.score.toFixed(2) + (n > 1 ? " ×" + n : ""))));
    }
    div.append(el("div", { class: "tactic", dataset: { tactic: tac } },
      el("h4", {}, tac ? tacticName(tac) : "Other"), ul));
  }
}

// Jumps to the next evidence sentence of `technique` (cycling), in the sentence view.
function jumpTo(technique) {
  const all = state.report.sentences.filter((s) => s.techniques.some((t) => t.technique === technique));
  if (!all.length) return;
  const preferred = all.filter((s) => s.techniques.some((t) => t.technique === technique && visible(t)));
  const list = preferred.length ? preferred : all;
  const n = (state.cycle.get(technique) ?? -1) + 1;
  const i = n % list.length;
  state.cycle.set(technique, i);
  const s = list[i];
  if (state.view !== "text") setView("text");
  if (!sentenceEl(s.index)) { state.unreviewedOnly = false; $("only-unreviewed").checked = false; renderText(); }
  select(s.index, Math.max(0, s.techniques.findIndex((t) => t.technique === technique)), true);
  status(technique + ": evidence " + (i + 1) + " of " + list.length + " (sentence " + s.index + ")");
}

function renderPanel() {
  const panel = $("sentence-panel");
  panel.replaceChildren(el("h3", {}, "Sentence"));
  const s = state.report.sentences.find((x) => x.index === state.selected);
  if (!s) {
    panel.append(el("p", { class: "muted" }, "Select a sentence to review its techniques."));
    return;
  }
  panel.append(el("p", {}, el("span", { class: "muted" }, "[" + s.index + "] "), s.text));
  if (state.focus >= s.techniques.length) state.focus = 0;
  s.techniques.forEach((t, i) => {
    const row = el("div", { class: "tech " + t.status + (i === state.focus ? " focused" : ""),
      dataset: { technique: t.technique } },
      el("span", { class: "id" }, t.technique), " " + (t.name || ""),
      el("span", { class: "band " + level(t) }, t.score.toFixed(2)),
      el("span", { class: "status " + t.status }, t.status));
    row.addEventListener("click", (ev) => {
      if (ev.target.tagName === "BUTTON") return;
      state.focus = i;
      renderPanel();
    });
    if (!state.preview) {
      row.append(
        el("button", { class: "small accept", type: "button", dataset: { technique: t.technique },
          onclick: () => review(s.index, t.technique, "accept") }, "accept"),
        el("button", { class: "small reject", type: "button", dataset: { technique: t.technique },
          onclick: () => review(s.index, t.technique, "reject") }, "reject"));
    }
    if (t.evidence && t.evidence.reasons && t.evidence.reasons.length) {
      row.append(el("div", { class: "muted" }, t.evidence.method + ": " + t.evidence.reasons.slice(0, 3).join("; ")));
    }
    panel.append(row);
  });
  if (!state.preview) {
    const input = el("input", { id: "add-technique", type: "text", placeholder: "T1059.001 or search words", list: "add-suggestions" });
    const list = el("datalist", { id: "add-suggestions" });
    input.addEventListener("input", () => suggest(input.value, list));
    panel.append(el("div", { class: "row" }, input, list,
      el("button", { id: "add-button", type: "button", onclick: () => {
        const id = input.value.trim().split(/\s/)[0].toUpperCase();
        if (id) review(s.index, id, "add");
      } }, "add")));
  }
}

function progressCounts() {
  let total = 0, done = 0;
  for (const s of state.report.sentences) {
    for (const t of s.techniques) {
      if (!isModel(t)) continue;
      total += 1;
      if (t.status !== "predicted") done += 1;
    }
  }
  return { total, done };
}

function bulkCandidates() {
  const min = parseFloat($("bulk-min").value);
  if (!(min >= 0 && min <= 1)) return [];
  const out = [];
  for (const s of state.report.sentences) {
    for (const t of s.techniques) if (unreviewed(t) && t.score >= min) out.push([s.index, t.technique]);
  }
  return out;
}

function renderProgress() {
  const p = $("progress");
  if (state.preview) {
    p.textContent = "Preview: not stored, nothing to review";
    p.className = "progress";
    $("bulk-accept").textContent = "Accept all";
    return;
  }
  const { total, done } = progressCounts();
  p.textContent = done + " of " + total + " predictions reviewed";
  p.className = "progress" + (total && done === total ? " done" : "");
  const n = bulkCandidates().length;
  $("bulk-accept").textContent = "Accept " + n;
  $("bulk-accept").disabled = state.preview || n === 0;
}

let suggestTimer = null;
function suggest(q, list) {
  clearTimeout(suggestTimer);
  if (q.trim().length < 3 || /^T\d{4}/i.test(q.trim())) return;
  suggestTimer = setTimeout(async () => {
    try {
      const r = await api("GET", "/v1/techniques?limit=8&q=" + encodeURIComponent(q));
      list.replaceChildren(...r.results.map((h) => el("option", { value: h.id + " " + h.name })));
    } catch (_) { /* suggestions are optional */ }
  }, 250);
}

async function postReview(sentence, technique, decision) {
  await api("POST", "/v1/reports/" + state.report.id + "/reviews",
    JSON.stringify({ sentence, technique, decision }), { "Content-Type": "application/json" });
}

// Reloads the stored report and re-renders, keeping the view, the selection and the focus.
async function reload() {
  const fresh = await api("GET", "/v1/reports/" + state.report.id);
  state.report = fresh;
  render();
  loadReports();
}

async function review(sentence, technique, decision) {
  if (state.preview || state.busy) return;
  state.busy = true;
  try {
    await postReview(sentence, technique, decision);
    await reload();
    // Keyboard review: the focus moves to the sentence's next open prediction.
    const s = state.report.sentences.find((x) => x.index === state.selected);
    const open = s ? s.techniques.findIndex(unreviewed) : -1;
    if (open >= 0) { state.focus = open; renderPanel(); }
    // "saved" only once the page shows the stored state (the browser tests wait for it).
    status(decision + " " + technique + " on sentence " + sentence + ": saved.");
  } catch (e) { status(e.message, true); } finally { state.busy = false; }
}

async function bulkAccept() {
  if (state.preview || state.busy) return;
  const todo = bulkCandidates();
  const min = parseFloat($("bulk-min").value);
  if (!todo.length) { status("No unreviewed prediction at or above " + $("bulk-min").value + ".", true); return; }
  state.busy = true;
  let n = 0;
  try {
    for (const [s, t] of todo) {
      status("Accepting " + (n + 1) + " of " + todo.length + "…");
      await postReview(s, t, "accept");
      n += 1;
    }
    await reload();
    status("Accepted " + n + " predictions at or above " + min.toFixed(2) + ".");
  } catch (e) {
    status("Accepted " + n + " of " + todo.length + ", then: " + e.message, true);
    try { await reload(); } catch (_) { /* keep the error */ }
  } finally { state.busy = false; }
}

// Sentences that j/k visit: those with a visible prediction, in document order.
function navigable() {
  return state.report.sentences.filter((s) => s.techniques.some(visible)).map((s) => s.index);
}

function step(dir) {
  const list = navigable();
  if (!list.length) return;
  let i;
  if (state.selected === null || state.selected === undefined) i = dir > 0 ? 0 : list.length - 1;
  else if (dir > 0) { i = list.findIndex((x) => x > state.selected); if (i < 0) i = list.length - 1; }
  else { i = -1; for (let k = 0; k < list.length; k++) if (list[k] < state.selected) i = k; if (i < 0) i = 0; }
  if (state.view !== "text") setView("text");
  select(list[i], 0, true);
}

function nextUnreviewed() {
  const open = (s) => s.techniques.findIndex((t) => unreviewed(t) && t.score >= state.min);
  const ss = state.report.sentences;
  const start = ss.findIndex((s) => s.index === state.selected);
  for (let k = 1; k <= ss.length; k++) {
    const s = ss[(start + k + ss.length) % ss.length];
    const f = open(s);
    if (f >= 0) {
      if (state.view !== "text") setView("text");
      if (!sentenceEl(s.index)) renderText();
      select(s.index, f, true);
      return;
    }
  }
  status("No unreviewed prediction left at this confidence.");
}

function decideFocused(decision) {
  const s = state.report.sentences.find((x) => x.index === state.selected);
  if (!s || !s.techniques.length) return;
  const t = s.techniques[Math.min(state.focus, s.techniques.length - 1)];
  if (t.origin === "analyst" && decision === "accept") return;
  review(s.index, t.technique, decision);
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !state.report) return;
  const tag = ev.target && ev.target.tagName;
  if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
  const k = ev.key;
  if (k === "j") step(1);
  else if (k === "k") step(-1);
  else if (k === "m") setView(state.view === "matrix" ? "text" : "matrix");
  else if (state.preview) return;
  else if (k === "a") decideFocused("accept");
  else if (k === "r") decideFocused("reject");
  else if (k === "n") nextUnreviewed();
  else return;
  ev.preventDefault();
}

async function exportAs(format) {
  if (!state.report || !state.report.id) return;
  try {
    const text = await fetch("/v1/reports/" + state.report.id + "/export?format=" + format,
      { headers: token() ? { Authorization: "Bearer " + token() } : {} }).then(async (r) => {
      const t = await r.text();
      if (!r.ok) throw new Error(r.status + " " + t);
      return t;
    });
    $("export-output").textContent = text;
    $("export-output").dataset.format = format;
    const ext = { navigator: "layer.json", stix: "stix.json", misp: "misp.json", json: "json", csv: "csv", markdown: "md" }[format];
    const type = { csv: "text/csv", markdown: "text/markdown" }[format] || "application/json";
    const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })),
      download: "report-" + state.report.id + "." + ext });
    document.body.append(a);
    a.click();
    a.remove();
    status("Exported " + format + ".");
  } catch (e) { status(e.message, true); }
}

async function init() {
  $("token").value = token();
  $("token").addEventListener("input", () => localStorage.setItem("ttpmap.token", $("token").value.trim()));
  $("submit").addEventListener("click", submit);
  $("preview").addEventListener("click", preview);
  $("refresh").addEventListener("click", loadReports);
  $("slider").addEventListener("input", () => {
    state.min = parseFloat($("slider").value);
    $("slider-value").textContent = state.min.toFixed(2);
    if (state.report) render();
  });
  $("only-unreviewed").addEventListener("change", () => {
    state.unreviewedOnly = $("only-unreviewed").checked;
    if (state.report) render();
  });
  $("view-text").addEventListener("click", () => setView("text"));
  $("view-matrix").addEventListener("click", () => setView("matrix"));
  $("next-unreviewed").addEventListener("click", nextUnreviewed);
  $("bulk-accept").addEventListener("click", bulkAccept);
  $("bulk-min").addEventListener("input", () => { if (state.report) renderProgress(); });
  for (const f of EXPORTS) $("export-" + f).addEventListener("click", () => exportAs(f));
  document.addEventListener("keydown", onKey);
  try {
    const h = await api("GET", "/health");
    $("server-info").textContent = "method " + h.method + ", ATT&CK " + h.attack_version +
      (h.writes ? "" : " — read-only server (no token configured)");
  } catch (e) { status(e.message, true); }
  try {
    state.tactics = (await api("GET", "/v1/tactics")).tactics;
  } catch (_) { /* the matrix falls back to the techniques' own tactic names */ }
  loadReports();
}

init();

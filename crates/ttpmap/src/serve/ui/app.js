// ttpmap review UI: plain JavaScript, no build step, no external resources.
// Report text is untrusted: everything is inserted with textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { report: null, selected: null, min: 0, preview: false };

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

function level(score) { return score >= 0.8 ? "high" : score >= 0.65 ? "mid" : "low"; }

function visible(t) { return t.status !== "rejected" && (t.origin === "analyst" || t.score >= state.min); }

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
  const payload = { text };
  if (title) payload.title = title;
  return [JSON.stringify(payload), { "Content-Type": "application/json" }];
}

async function submit() {
  try {
    const [body, headers] = uploadBody();
    status("Analysing…");
    const report = await api("POST", "/v1/reports", body, headers);
    state.preview = false;
    status("Stored as report " + report.id + ".");
    show(report);
    loadReports();
  } catch (e) { status(e.message, true); }
}

// Extract without storing (read-only servers): sentences but no review buttons.
async function preview() {
  try {
    const [body, headers] = uploadBody();
    status("Analysing…");
    const x = await api("POST", "/v1/extract?sentences=all", body, headers);
    const bySentence = new Map(x.sentences.map((s) => [s.sentence, s.predictions]));
    state.preview = true;
    show({
      id: null, title: x.title, source: x.source, techniques: x.techniques,
      sentences: x.document.sentences.map((s) => ({
        index: s.index, text: s.text,
        techniques: (bySentence.get(s.index) || []).map((p) => ({
          technique: p.technique, name: "", tactics: [], score: p.score, evidence: p.evidence,
          origin: "model", status: "predicted" })),
      })),
    });
    status("Preview (not stored): reviewing needs a stored report.");
  } catch (e) { status(e.message, true); }
}

async function loadReports() {
  try {
    const data = await api("GET", "/v1/reports?limit=50");
    const ul = $("reports");
    ul.replaceChildren();
    for (const r of data.reports) {
      ul.append(el("li", { dataset: { id: r.id }, onclick: () => openReport(r.id) },
        "#" + r.id + " " + (r.title || r.source) + " ",
        el("span", { class: "muted" }, r.predictions + " predictions, " + r.reviews + " reviews")));
    }
  } catch (e) { status(e.message, true); }
}

async function openReport(id) {
  try {
    state.preview = false;
    show(await api("GET", "/v1/reports/" + id));
  } catch (e) { status(e.message, true); }
}

function show(report) {
  state.report = report;
  $("report-pane").hidden = false;
  $("report-title").textContent = (report.id ? "#" + report.id + " " : "") + (report.title || report.source);
  for (const b of ["export-navigator", "export-stix", "export-misp", "export-json"]) $(b).disabled = !report.id;
  renderText();
  renderTactics();
  renderPanel();
}

function renderText() {
  const art = $("report-text");
  art.replaceChildren();
  for (const s of state.report.sentences) {
    const shown = s.techniques.filter(visible);
    const span = el("span", { class: "sentence", dataset: { index: s.index } }, s.text);
    if (shown.length) {
      const best = Math.max(...shown.map((t) => t.score));
      span.classList.add("has", level(best));
      span.title = shown.map((t) => t.technique + " " + t.score.toFixed(2)).join(", ");
      span.append(el("span", { class: "tag" }, shown.map((t) => t.technique).join(" ")));
    }
    if (state.selected === s.index) span.classList.add("selected");
    span.addEventListener("click", () => { state.selected = s.index; renderText(); renderPanel(); });
    art.append(span, " ");
  }
}

function renderTactics() {
  // Group every visible technique of every sentence by tactic.
  const groups = new Map();
  for (const s of state.report.sentences) {
    for (const t of s.techniques.filter(visible)) {
      const tactics = t.tactics && t.tactics.length ? t.tactics : ["(no tactic)"];
      for (const tac of tactics) {
        if (!groups.has(tac)) groups.set(tac, new Map());
        const g = groups.get(tac);
        const cur = g.get(t.technique);
        if (!cur || cur.t.score < t.score) g.set(t.technique, { t, n: (cur ? cur.n : 0) + 1 });
        else cur.n += 1;
      }
    }
  }
  const div = $("tactics");
  div.replaceChildren();
  if (!groups.size) div.append(el("p", { class: "muted" }, "No technique at this confidence."));
  for (const [tac, g] of [...groups].sort((a, b) => a[0].localeCompare(b[0]))) {
    const ul = el("ul");
    for (const { t, n } of [...g.values()].sort((a, b) => b.t.score - a.t.score)) {
      ul.append(el("li", { dataset: { technique: t.technique } },
        el("span", { class: "id" }, t.technique), " " + (t.name || "") + " ",
        el("span", { class: "muted" }, t.score.toFixed(2) + (n > 1 ? " ×" + n : ""))));
    }
    div.append(el("div", { class: "tactic", dataset: { tactic: tac } }, el("h4", {}, tac.replace(/-/g, " ")), ul));
  }
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
  for (const t of s.techniques) {
    const row = el("div", { class: "tech " + t.status, dataset: { technique: t.technique } },
      el("span", { class: "id" }, t.technique), " " + (t.name || ""),
      el("span", { class: "muted" }, t.score.toFixed(2)),
      el("span", { class: "status " + t.status }, t.status));
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
  }
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

async function review(sentence, technique, decision) {
  try {
    await api("POST", "/v1/reports/" + state.report.id + "/reviews",
      JSON.stringify({ sentence, technique, decision }), { "Content-Type": "application/json" });
    const keep = state.selected;
    const fresh = await api("GET", "/v1/reports/" + state.report.id);
    // The user may have picked another sentence while the request ran: keep that choice.
    const selected = state.selected;
    show(fresh);
    state.selected = selected !== undefined ? selected : keep;
    renderText();
    renderPanel();
    // "saved" only once the page shows the stored state (the browser test waits for it).
    status(decision + " " + technique + " on sentence " + sentence + ": saved.");
    loadReports();
  } catch (e) { status(e.message, true); }
}

async function exportAs(format) {
  try {
    const text = await fetch("/v1/reports/" + state.report.id + "/export?format=" + format,
      { headers: token() ? { Authorization: "Bearer " + token() } : {} }).then(async (r) => {
      const t = await r.text();
      if (!r.ok) throw new Error(r.status + " " + t);
      return t;
    });
    $("export-output").textContent = text;
    $("export-output").dataset.format = format;
    const ext = { navigator: "layer.json", stix: "stix.json", misp: "misp.json", json: "json" }[format];
    const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/json" })),
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
    if (state.report) { renderText(); renderTactics(); }
  });
  $("export-navigator").addEventListener("click", () => exportAs("navigator"));
  $("export-stix").addEventListener("click", () => exportAs("stix"));
  $("export-misp").addEventListener("click", () => exportAs("misp"));
  $("export-json").addEventListener("click", () => exportAs("json"));
  try {
    const h = await api("GET", "/health");
    $("server-info").textContent = "method " + h.method + ", ATT&CK " + h.attack_version +
      (h.writes ? "" : " — read-only server (no token configured)");
  } catch (e) { status(e.message, true); }
  loadReports();
}

init();

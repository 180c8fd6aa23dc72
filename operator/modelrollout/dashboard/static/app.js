// ModelRollout dashboard: the overview and a rollout's page, live from the server's event stream.
// Vanilla JS; charts are hand-written inline SVG (no library). Everything from the cluster is set as text.
"use strict";

const TOKEN = document.querySelector('meta[name="modelrollout-token"]').content;
const SVGNS = "http://www.w3.org/2000/svg";
const RISKY_TEXT = {
  abort: "All traffic goes back to stable at once and the canary rolls back.",
  promote: "The remaining steps (and their checks) are skipped and the canary is promoted now.",
  "rollback-to": "The earlier revision's template returns to the spec and is promoted without steps.",
};
const state = { overview: null, detail: null, detailKey: null, loading: false, again: false, confirm: null,
  result: null, revision: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// replaceChildren without the absent parts (it would show them as "null").
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

const short = (rev) => rev || "–";
const time = (iso) => iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
const clock = (ms) => new Date(ms).toISOString().slice(11, 19);
function num(v) {
  if (v === null || v === undefined) return "–";
  const text = Number(v).toPrecision(4);
  return text.includes(".") && !text.includes("e") ? text.replace(/\.?0+$/, "") : text;
}

function route() {
  const m = location.hash.match(/^#\/([^/]+)\/([^/]+)$/);
  return m ? { namespace: decodeURIComponent(m[1]), name: decodeURIComponent(m[2]) } : null;
}

// ---------------------------------------------------------------------------------------------- overview

function weightBar(weight) {
  const bar = h("span", { class: "bar" }, h("span"));
  bar.firstChild.style.width = `${Math.max(0, Math.min(100, weight))}%`;
  return bar;
}

function renderOverview() {
  const ov = state.overview;
  const main = document.getElementById("main");
  if (!ov) return;
  document.getElementById("scope").textContent = ov.namespace ? `namespace ${ov.namespace}` : "all namespaces";
  const rows = ov.rollouts.map((r) => h("tr", { class: "rollout", "data-key": `${r.namespace}/${r.name}`,
    onclick: () => { location.hash = `#/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}`; } },
    ov.namespace ? null : h("td", { class: "namespace" }, r.namespace),
    h("td", { class: "name" }, h("a", { href: `#/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}` },
      r.name)),
    h("td", { class: "phase-cell" }, h("span", { class: `phase ${r.phase}` }, r.phase)),
    h("td", { class: "weight", "data-weight": r.weight }, weightBar(r.weight), `${r.weight}%`),
    h("td", { class: "step" }, r.step === null || r.step === undefined ? "–" : r.step),
    h("td", { class: "mono" }, short(r.stable)),
    h("td", { class: "mono" }, short(r.canary)),
    h("td", { class: "waiting" }, r.waiting)));
  fill(main,
    h("h1", {}, "Rollouts"),
    ov.error ? h("div", { class: "error-banner", id: "overview-error" }, ov.error) : null,
    h("table", { id: "rollouts" },
      h("thead", {}, h("tr", {}, ...[ov.namespace ? null : "Namespace", "Name", "Phase", "Weight", "Step", "Stable",
        "Canary", "Waiting for"].filter((t) => t).map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" },
        ov.synced ? "No ModelRollouts here." : "Listing…")))));
}

// ---------------------------------------------------------------------------------------------- charts

function chart({ id, cls, points, t0, t1, y0, y1, stepLine, min, max, dots, unit }) {
  const W = 560, H = 180, L = 48, R = 12, T = 10, B = 24;
  if (t1 <= t0) t1 = t0 + 1000;
  if (y1 <= y0) { y1 = y0 + 1; }
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const g = [];
  const lo = min !== null && min !== undefined ? min : y0, hi = max !== null && max !== undefined ? max : y1;
  if ((min !== null && min !== undefined) || (max !== null && max !== undefined)) {
    g.push(s("rect", { class: "band", x: L, width: W - L - R, y: y(Math.min(hi, y1)),
      height: Math.max(0, y(Math.max(lo, y0)) - y(Math.min(hi, y1))) }));
  }
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    g.push(s("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    g.push(s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, num(v) + (unit || "")));
  }
  g.push(s("text", { x: L, y: H - 6 }, clock(t0)));
  g.push(s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, clock(t1)));
  for (const [name, v] of [["min", min], ["max", max]]) {
    if (v === null || v === undefined) continue;
    g.push(s("line", { class: `threshold threshold-${name}`, "data-value": v, x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    g.push(s("text", { x: W - R - 2, y: y(v) - 3, "text-anchor": "end" }, `${name} ${num(v)}`));
  }
  if (points.length) {
    const pts = [];
    points.forEach(([t, v], i) => {
      if (stepLine && i > 0) pts.push([x(t), y(points[i - 1][1])]);
      pts.push([x(t), y(v)]);
    });
    if (stepLine) pts.push([x(t1), y(points[points.length - 1][1])]);
    g.push(s("polyline", { class: "line", points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ") }));
  }
  for (const d of dots || []) {
    const cy = d.value === null || d.value === undefined ? H - B : y(Math.max(y0, Math.min(y1, d.value)));
    g.push(s("circle", { class: `evaluation ${d.verdict}`, cx: x(d.t), cy, r: 4 },
      s("title", {}, `${time(new Date(d.t).toISOString())} ${d.verdict} ${num(d.value)}${d.message ? ": " + d.message : ""}`)));
  }
  return s("svg", { id, class: `chart ${cls || ""}`, viewBox: `0 0 ${W} ${H}`, role: "img" }, g);
}

function weightChart(d) {
  const now = Date.parse(d.window[1]);
  const pts = d.weights.map(([t, w]) => [Date.parse(t), w]);
  const t0 = Math.min(Date.parse(d.window[0]), ...(pts.length ? [pts[0][0]] : []));
  return chart({ id: "weight-chart", points: pts, t0, t1: now, y0: 0, y1: 100, stepLine: true, unit: "%" });
}

function metricChart(d, m) {
  const series = (m.series || []).map(([t, v]) => [t * 1000, v]);
  const dots = m.evaluations.map((e) => ({ t: Date.parse(e.at), value: e.value, verdict: e.verdict,
    message: e.message }));
  const ts = [...series.map((p) => p[0]), ...dots.map((p) => p.t), Date.parse(d.window[0])];
  const t1 = Math.max(Date.parse(d.window[1]), ...ts);
  const values = [...series.map((p) => p[1]), ...dots.filter((p) => p.value !== null).map((p) => p.value)];
  for (const v of [m.min, m.max]) if (v !== null && v !== undefined) values.push(v);
  let y0 = values.length ? Math.min(...values) : 0, y1 = values.length ? Math.max(...values) : 1;
  const pad = (y1 - y0) * 0.15 || Math.abs(y1) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  const line = series.length ? series : dots.filter((p) => p.value !== null).map((p) => [p.t, p.value]);
  return chart({ id: `metric-${m.name}`, cls: "metric-chart", points: line, t0: Math.min(...ts), t1, y0, y1,
    min: m.min, max: m.max, dots });
}

// ---------------------------------------------------------------------------------------------- a rollout

async function post(verb, body) {
  const { namespace, name } = state.detailKey;
  const resp = await fetch(`/api/rollouts/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/${verb}`, {
    method: "POST", headers: { "Content-Type": "application/json", "X-ModelRollout-Token": TOKEN },
    body: JSON.stringify(body), credentials: "same-origin" });
  let out = {};
  try { out = await resp.json(); } catch (e) { out = { error: `${resp.status} ${resp.statusText}` }; }
  state.confirm = null;
  state.result = resp.ok ? { ok: true, text: out.message, verb } : { ok: false, text: out.error, verb };
  renderDetail();
  refreshDetail();
}

function ask(verb, body, text) {
  state.confirm = { verb, body, text };
  state.result = null;
  renderDetail();
}

function actionButton(verb, label, a, body, cls) {
  const attrs = { id: `action-${verb}`, class: cls || "", disabled: !a.allowed, title: a.allowed ? `sets ${a.annotation}=${a.value}` : a.reason };
  attrs.onclick = () => {
    const payload = { expect: a.value, ...(body ? body() : {}) };
    if (a.risky) ask(verb, payload, `${label}: sets ${a.annotation}=${payload.revision || a.value}. ${RISKY_TEXT[verb] || ""}`);
    else post(verb, payload);
  };
  return h("button", attrs, label);
}

function renderDetail() {
  const d = state.detail;
  const main = document.getElementById("main");
  if (!d) return;
  if (d.error) { main.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← all rollouts")), h("div", { class: "error-banner" }, d.error)); return; }
  const sm = d.summary, a = d.actions;
  const approval = d.approval ? h("div", { class: "card approval", id: "approval" },
    h("h2", {}, `Waiting for approval at step ${d.approval.step + 1}`),
    h("p", {}, d.approval.reason, h("span", { class: "muted" }, ` — since ${time(d.approval.since)}`)),
    h("p", {}, "Token ", h("code", { id: "approve-token" }, d.approval.token),
      d.approval.action && d.approval.action !== "continue" ? ` (approving ${d.approval.action === "resume" ? "resumes the rollout" : "rolls the canary back"})` : ""),
    h("div", { class: "actions" },
      h("button", { id: "approve", class: "primary", disabled: !a.approve.allowed,
        onclick: () => d.approval.action === "rollback"  // approving this gate rolls back: ask first
          ? ask("approve", { token: d.approval.token }, `Approve ${d.approval.token}: the canary rolls back and stable takes all traffic.`)
          : post("approve", { token: d.approval.token }) }, `Approve ${d.approval.token}`),
      h("span", { class: "muted mono" }, d.approveCommand))) : null;
  // the page is drawn again at every change of the rollout: the chosen revision lives in state
  const candidates = a["rollback-to"].candidates.slice().reverse();
  if (!candidates.includes(state.revision)) state.revision = candidates[0] || null;
  const select = candidates.length ? h("select", { id: "rollback-revision",
    onchange: (e) => { state.revision = e.target.value; } },
    candidates.map((c) => h("option", { value: c, selected: c === state.revision }, c))) : null;
  const confirm = state.confirm ? h("div", { id: "confirm", class: "card" }, h("p", {}, state.confirm.text),
    h("div", { class: "actions" },
      h("button", { id: "confirm-yes", class: "danger", onclick: () => post(state.confirm.verb, state.confirm.body) },
        `Yes, ${state.confirm.verb}`),
      h("button", { id: "confirm-no", onclick: () => { state.confirm = null; renderDetail(); } }, "Cancel"))) : null;
  const result = state.result ? h("div", { id: "action-result", class: `result ${state.result.ok ? "ok" : "error"}`,
    "data-verb": state.result.verb },
    state.result.text) : null;
  const steps = h("ol", { class: "steps", id: "steps" }, d.steps.map((st) => h("li", {
    class: st.state, "data-index": st.index === null ? "promotion" : st.index },
    st.index === null ? "" : `${st.index + 1}  `, st.text,
    st.gate ? h("span", { class: "gate" }, `gate: ${st.gate}`) : null,
    st.approved ? h("span", { class: "muted" }, " (approved)") : null,
    st.waiting ? h("span", { class: "muted" }, " ← waiting for approval") : null)));
  const metrics = d.metrics.map((m) => h("div", { class: "card metric", "data-metric": m.name },
    h("h2", {}, m.name, h("span", { class: "muted" }, `  ${m.min !== null ? "min " + num(m.min) : ""}${m.min !== null && m.max !== null ? ", " : ""}${m.max !== null ? "max " + num(m.max) : ""}; on failure: ${m.onFailure}`)),
    metricChart(d, m),
    h("div", { class: "legend" },
      h("span", {}, m.source === "prometheus" ? "line: Prometheus range query" : "line: evaluations seen in status"),
      h("span", {}, "dots: evaluations (green pass, red fail, hollow inconclusive)"),
      m.last ? h("span", { class: "last" }, `last: ${num(m.last.value)} ${m.last.verdict}${m.last.message ? " — " + m.last.message : ""}`) : null),
    m.seriesError ? h("div", { class: "muted" }, `Prometheus: ${m.seriesError}`) : null,
    h("div", { class: "muted mono" }, m.query || "")));
  const pre = d.preflight || {};
  const findings = [["dependency changes", pre.dependencyChanges], ["dependency jumps", pre.dependencyJumps],
    ["removed config keys", pre.removedConfigKeys], ["renamed config keys", pre.renamedConfigKeys]]
    .filter(([, v]) => v && v.length);
  fill(main,
    h("p", {}, h("a", { href: "#/" }, "← all rollouts")),
    h("h1", {}, `${sm.namespace}/${sm.name} `, h("span", { class: `phase ${sm.phase}`, id: "phase" }, sm.phase)),
    h("p", { id: "message" }, sm.message),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("dl", { class: "kv" },
        h("dt", {}, "Stable"), h("dd", { class: "mono" }, short(sm.stable)),
        h("dt", {}, "Canary"), h("dd", { class: "mono" }, short(sm.canary)),
        h("dt", {}, "Weight"), h("dd", { id: "weight" }, weightBar(sm.weight), `${sm.weight}% on canary`),
        h("dt", {}, "Step"), h("dd", {}, sm.step === null || sm.step === undefined ? "–" : sm.step),
        h("dt", {}, "Waiting for"), h("dd", {}, sm.waiting || "–"),
        h("dt", {}, "Analysis"), h("dd", {}, `${d.analysis.passes} passing in a row, ${d.analysis.inconclusive} inconclusive; last ${time(d.analysis.lastAt)}`),
        h("dt", {}, "Prometheus"), h("dd", { class: "mono" }, d.spec.prometheus || "–"))),
      h("div", { class: "card" }, h("h2", {}, "Steps"), steps)),
    approval,
    h("div", { class: "card" }, h("div", { class: "actions" },
      actionButton("abort", "Abort", a.abort, null, "danger"),
      actionButton("retry", "Retry", a.retry),
      actionButton("promote", "Promote now", a.promote, null, "danger"),
      select, actionButton("rollback-to", "Roll back to", a["rollback-to"], () => (state.revision ? { revision: state.revision, expect: state.revision } : {}), "danger")),
      confirm, result),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "Canary weight"), weightChart(d),
        h("div", { class: "legend" }, h("span", {}, "from the operator's Events, status.history and what this dashboard saw while it ran"))),
      metrics),
    d.compat ? h("div", { class: "card", id: "compat" }, h("h2", {}, "Compat-probe: failing checks"),
      d.compat.error ? h("p", { class: "muted" }, d.compat.error)
        : d.compat.failing.length ? h("ul", {}, d.compat.failing.map((c) => h("li", { class: "mono" }, c)))
          : h("p", {}, "none failing"), h("div", { class: "muted mono" }, d.compat.query)) : null,
    findings.length ? h("div", { class: "card", id: "preflight" }, h("h2", {}, "Preflight findings"),
      h("dl", { class: "kv" }, findings.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v.join("; "))]))) : null,
    h("h2", {}, "History"),
    h("table", { id: "history" }, h("thead", {}, h("tr", {}, ["When", "Revision", "Outcome", "Step", "By", "Message"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.history.map((e) => h("tr", {}, h("td", {}, time(e.at)), h("td", { class: "mono" }, e.revision),
        h("td", {}, e.outcome), h("td", {}, e.step === null || e.step === undefined ? "" : e.step + 1), h("td", {}, e.by || ""),
        h("td", {}, e.message || "", e.token ? h("span", { class: "mono muted" }, ` ${e.token}`) : null))))),
    h("h2", {}, "Events"),
    h("table", { id: "events" }, h("thead", {}, h("tr", {}, ["When", "Type", "Reason", "Message"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.events.map((e) => h("tr", {}, h("td", {}, time(e.at)), h("td", {}, e.type),
        h("td", {}, e.reason), h("td", {}, e.message, e.count > 1 ? h("span", { class: "muted" }, ` ×${e.count}`) : null))))));
}

async function refreshDetail() {
  const key = state.detailKey;
  if (!key) return;
  if (state.loading) { state.again = true; return; }
  state.loading = true;
  try {
    const resp = await fetch(`/api/rollouts/${encodeURIComponent(key.namespace)}/${encodeURIComponent(key.name)}`);
    const body = await resp.json();
    if (state.detailKey === key) { state.detail = resp.ok ? body : { error: body.error }; renderDetail(); }
  } catch (e) {
    // the next change event fetches again
  } finally {
    state.loading = false;
    if (state.again) { state.again = false; refreshDetail(); }
  }
}

// ---------------------------------------------------------------------------------------------- wiring

function show() {
  const r = route();
  state.confirm = null;
  state.result = null;
  if (r) {
    state.detailKey = r;
    state.detail = null;
    document.getElementById("main").replaceChildren(h("p", { class: "muted" }, "Loading…"));
    refreshDetail();
  } else {
    state.detailKey = null;
    renderOverview();
  }
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/stream");
  source.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
  source.addEventListener("overview", (e) => {
    state.overview = JSON.parse(e.data);
    if (!state.detailKey) renderOverview(); else refreshDetail();
  });
  source.addEventListener("change", (e) => {
    const ev = JSON.parse(e.data);
    const ov = state.overview || (state.overview = { rollouts: [], synced: false });
    if (ev.type === "MODIFIED") {
      const i = ov.rollouts.findIndex((r) => `${r.namespace}/${r.name}` === ev.key);
      if (i >= 0) ov.rollouts[i] = ev.summary; else ov.rollouts.push(ev.summary);
      ov.rollouts.sort((p, q) => `${p.namespace}/${p.name}`.localeCompare(`${q.namespace}/${q.name}`));
    } else if (ev.type === "DELETED") {
      ov.rollouts = ov.rollouts.filter((r) => `${r.namespace}/${r.name}` !== ev.key);
    } else if (ev.type === "ERROR") {
      ov.error = ev.message;
    } else if (ev.type === "SYNCED") {
      ov.synced = true; ov.error = null;
    }
    if (!state.detailKey) renderOverview();
    else if (ev.key === `${state.detailKey.namespace}/${state.detailKey.name}`) refreshDetail();
  });
}

window.addEventListener("hashchange", show);
show();
connect();

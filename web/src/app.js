// The dashboard page of posture (issue 20): the secure score tile with its categories, the score
// over time, top recommendations and improvement opportunities, for the tenant and group chosen;
// a recommendation's misconfigured devices, exportable as CSV. Everything comes from the query
// API with the user's token; numbers are formatted as the CLI formats them.
//
// Every figure a test reads carries a `data-testid`, and its exact value (as the API gave it) in
// `data-value`, so a browser test can compare the page with the CLI's JSON.

import uPlot from "uplot";
import * as api from "./api.js";
import * as fmt from "./format.js";

const CATEGORIES = [
  ["application", "Application"],
  ["os", "Operating system"],
  ["network", "Network"],
  ["accounts", "Accounts"],
  ["security_controls", "Security controls"],
];

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");

/** An element: `h("td", {class: "n"}, "text", child, ...)`. */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** A figure with its exact value for tests. */
function figure(testid, value, text) {
  return h("span", { "data-testid": testid, "data-value": value }, text);
}

function status(message, kind = "") {
  const s = $("#status");
  s.textContent = message;
  s.className = `status ${kind}`;
}

// --- state: the scope in the URL hash (#/?tenant=t1&group=finance), the token in the session ---

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", params: new URLSearchParams(query || "") };
}

function scope() {
  const { params } = route();
  const get = (k) => params.get(k) || "";
  return { tenant: get("tenant"), group: get("group"), at: get("at"), category: get("category"), remediation: get("remediation"), os: get("os") };
}

/** The instant the page shows, fixed for one render (so every tile and figure of a view is of
 * the same instant): the `at` of the URL (RFC 3339 or epoch ms), else now; `null` when the URL's
 * `at` is not an instant. */
let shownAt = null;
function instantShown() {
  return shownAt;
}
function instantOfUrl() {
  const at = scope().at;
  if (!at) return new Date().toISOString();
  const t = /^\d+$/.test(at) ? Number(at) : Date.parse(at);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/** Renders are numbered: a view whose data arrives after a newer render started is dropped, so a
 * slow view never paints over the one the URL now names. */
let renderSeq = 0;
const stale = (seq) => seq !== renderSeq;

function go(path, extra = {}) {
  const p = new URLSearchParams();
  const s = scope();
  for (const [k, v] of Object.entries({ ...s, ...extra })) {
    if (v) p.set(k, v);
  }
  location.hash = `#${path}?${p}`;
}

// --- login ---

function showLogin(message) {
  $("#scope").hidden = true;
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    minlength: 16,
    "aria-describedby": "token-help",
  });
  const form = h(
    "form",
    {
      class: "login card",
      onsubmit: async (ev) => {
        ev.preventDefault();
        api.setToken(input.value.trim());
        await start();
      },
    },
    h("h2", {}, "Log in"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { id: "token-help", class: "help" }, "A token of the API tokens file (--api-tokens-file). It is kept in this browser tab only."),
    h("button", { type: "submit" }, "Log in"),
  );
  main().replaceChildren(form);
  if (message) status(message, "error");
  input.focus();
}

// --- the dashboard: four tiles ---

async function dashboard() {
  const seq = renderSeq;
  const { tenant, group } = scope();
  const base = api.tenantPath(tenant);
  const without = $("#without").checked;
  // The view this grid shows (the URL's hash), for whoever waits for a view to be drawn.
  const grid = h("div", { class: "grid", "data-view": location.hash });
  main().replaceChildren(grid);
  const tiles = {
    score: tile(grid, "score", "Secure score"),
    history: tile(grid, "history", "Score over time"),
    recs: tile(grid, "recommendations", "Top recommendations"),
    opps: tile(grid, "opportunities", "Improvement opportunities"),
  };
  status("Loading…");
  const now = instantShown();
  // A tile whose data fails says so in place; the others still show.
  const guard = (promise, ...bodies) =>
    promise.catch((e) => {
      for (const b of bodies) done(b, h("p", { class: "tile-error", role: "alert" }, `Could not load: ${e.message}`));
      throw e;
    });
  const results = await Promise.allSettled([
    guard(api.get(`${base}/score`, { group, at: now }).then((s) => renderScore(tiles.score, s, without)), tiles.score),
    guard(renderHistory(tiles.history, base, group, without), tiles.history),
    guard(
      api.get(`${base}/recommendations`, { group, at: now, ...filters() }).then((r) => {
        renderRecommendations(tiles.recs, r, base);
        renderOpportunities(tiles.opps, r);
      }),
      tiles.recs,
      tiles.opps,
    ),
  ]);
  if (stale(seq)) return;
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  if (failed.some((e) => e.status === 401)) return showLogin("The token was refused: log in again.");
  status(failed.length ? `Some tiles failed: ${failed.map((e) => e.message).join("; ")}` : "", failed.length ? "error" : "");
}

function tile(grid, id, title) {
  const body = h("div", { class: "tile-body", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading…"));
  grid.append(h("section", { class: "card tile", id: `tile-${id}`, "aria-labelledby": `h-${id}` }, h("h2", { id: `h-${id}` }, title), body));
  return body;
}

function done(body, ...children) {
  body.setAttribute("aria-busy", "false");
  body.replaceChildren(...children);
}

function renderScore(body, s, without) {
  const part = without ? s.without_exceptions : s;
  const rows = CATEGORIES.filter(([k]) => part.categories && part.categories[k]).map(([k, label]) => {
    const c = part.categories[k];
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, label),
      h("td", { class: "n" }, figure(`category-${k}-points`, c.points, `${fmt.points(c.points)} / ${fmt.points(c.max_points)}`)),
      h("td", { class: "n" }, figure(`category-${k}-percent`, c.percent, fmt.percent(c.percent))),
    );
  });
  done(
    body,
    h("p", { class: "big" }, figure("score-percent", part.percent, fmt.percent(part.percent))),
    h(
      "p",
      {},
      figure("score-points", part.points, fmt.points(part.points)),
      " of ",
      figure("score-max-points", part.max_points, fmt.points(part.max_points)),
      " points",
      without ? " (without exceptions)" : "",
    ),
    h(
      "p",
      { class: "help" },
      without ? "With exceptions: " : "Without exceptions: ",
      figure("score-other-percent", without ? s.percent : s.without_exceptions.percent, fmt.percent(without ? s.percent : s.without_exceptions.percent)),
      s.cut && s.cut.complete_through ? ` · complete through ${fmt.instant(s.cut.complete_through)}` : "",
    ),
    h("table", { class: "categories" }, h("caption", {}, "Categories"), h("tbody", {}, rows)),
  );
}

async function renderHistory(body, base, group, without) {
  const { params } = route();
  const bucket = params.get("bucket") || "hour";
  const days = Number(params.get("days") || "1");
  const to = Date.parse(instantShown());
  const from = to - days * 86_400_000;
  const points = await api.get(`${base}/history`, {
    group,
    bucket,
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
  });
  const controls = h(
    "div",
    { class: "controls" },
    h(
      "label",
      {},
      "Range ",
      h(
        "select",
        { id: "range", onchange: (e) => go("/", { bucket, days: e.target.value }) },
        [1, 7, 30, 90, 365].map((d) => h("option", { value: d, selected: d === days }, d === 1 ? "1 day" : `${d} days`)),
      ),
    ),
    h(
      "label",
      {},
      "Bucket ",
      h(
        "select",
        { id: "bucket", onchange: (e) => go("/", { bucket: e.target.value, days }) },
        ["hour", "day"].map((b) => h("option", { value: b, selected: b === bucket }, b)),
      ),
    ),
  );
  const chart = h("div", { class: "chart", "data-testid": "history-chart", "data-points": points.length });
  const hover = h("p", { class: "hover", "data-testid": "history-hover", "aria-live": "polite" }, "Hover the line for the value at a date.");
  done(body, controls, chart, hover);
  const xs = points.map((p) => p.at_ms / 1000);
  // A bucket before the scope had any device scores nothing: a gap, not 0%.
  const ys = points.map((p) => {
    const part = without ? p.without_exceptions : p;
    return part.max_points > 0 ? part.percent : null;
  });
  const width = () => Math.max(240, chart.clientWidth || 560);
  const plot = new uPlot(
    {
      width: width(),
      height: 220,
      scales: { y: { range: (u, min, max) => [Math.max(0, Math.floor(min - 2)), Math.min(100, Math.ceil(max + 2))] } },
      series: [{}, { label: without ? "percent without exceptions" : "percent", stroke: "#2b6cb0", width: 2, value: (u, v) => (v == null ? "" : fmt.percent(v)) }],
      axes: [{}, { values: (u, vals) => vals.map((v) => `${v}%`) }],
      legend: { show: false },
      hooks: {
        setCursor: [
          (u) => {
            const i = u.cursor.idx;
            if (i == null || !points[i]) return;
            hover.textContent = `${fmt.instant(points[i].at)}: ${ys[i] == null ? "no device yet" : fmt.percent(ys[i])}`;
            hover.dataset.value = ys[i] == null ? "" : ys[i];
          },
        ],
      },
    },
    [xs, ys],
    chart,
  );
  // Follow the window's width (a narrow window, a rotated phone).
  const resize = new ResizeObserver(() => plot.setSize({ width: width(), height: 220 }));
  resize.observe(chart);
}

/** The what-if figure of a fix: the scope's percent once every misconfigured device passes. */
async function whatIf(base, control) {
  const { group } = scope();
  const [w] = await api.get(`${base}/whatif`, { control, group, at: instantShown() });
  return w;
}

function renderRecommendations(body, recs, base) {
  if (!recs.length) return done(body, h("p", {}, "No recommendation: every applicable control passes."));
  const rows = recs.slice(0, 10).map((r, i) => {
    const cell = h("td", { class: "n" }, "…");
    whatIf(base, r.control).then(
      (w) => cell.replaceChildren(figure("whatif", w.after.percent, fmt.percent(w.after.percent))),
      (e) => cell.replaceChildren(h("span", { class: "tile-error", title: e.message }, "?")),
    );
    return h(
      "tr",
      { "data-testid": "recommendation", "data-control": r.control },
      h("td", { class: "n" }, i + 1),
      h("td", {}, h("a", { href: `#/control/${encodeURIComponent(r.control)}?${new URLSearchParams(scopeParams())}` }, r.title), h("div", { class: "help" }, r.control, " · ", r.category)),
      h("td", { class: "n" }, figure("points-gained", r.points_gained, `+${fmt.points(r.points_gained)}`)),
      h("td", { class: "n" }, figure("misconfigured", `${r.misconfigured_devices}/${r.applicable_devices}`, fmt.ratio(r.misconfigured_devices, r.applicable_devices))),
      cell,
    );
  });
  done(
    body,
    h(
      "table",
      { class: "wide" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "#"),
          h("th", { scope: "col" }, "Recommendation"),
          h("th", { scope: "col", class: "n" }, "+points"),
          h("th", { scope: "col", class: "n" }, "misconfigured"),
          h("th", { scope: "col", class: "n", title: "The score once every misconfigured device is fixed (what-if)" }, "score if fixed"),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

function renderOpportunities(body, recs) {
  const top = [...recs].sort((a, b) => b.misconfigured_devices - a.misconfigured_devices || a.control.localeCompare(b.control)).slice(0, 10);
  if (!top.length) return done(body, h("p", {}, "No misconfigured device."));
  done(
    body,
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Control"), h("th", { scope: "col", class: "n" }, "Misconfigured devices"))),
      h(
        "tbody",
        {},
        top.map((r) =>
          h(
            "tr",
            { "data-testid": "opportunity", "data-control": r.control },
            h("td", {}, r.title, h("div", { class: "help" }, r.control)),
            h("td", { class: "n" }, h("a", { href: `#/control/${encodeURIComponent(r.control)}?${new URLSearchParams(scopeParams())}`, "data-testid": "misconfigured-link", "data-value": r.misconfigured_devices }, r.misconfigured_devices)),
          ),
        ),
      ),
    ),
  );
}

function scopeParams() {
  return Object.fromEntries(Object.entries(scope()).filter(([, v]) => v));
}

/** The recommendation filters of the URL (category, remediation type, OS), for the API. */
function filters() {
  const { category, remediation, os } = scope();
  return { category, remediation, os };
}

// --- a control's misconfigured devices ---

async function controlView(control) {
  const seq = renderSeq;
  const { tenant, group } = scope();
  const base = api.tenantPath(tenant);
  const path = `${base}/controls/${encodeURIComponent(control)}/devices`;
  status("Loading…");
  const [info, devices, recs, exceptions, tasks] = await Promise.all([
    api.get(`${base}/controls/${encodeURIComponent(control)}`),
    api.get(path, { group, state: "FAIL" }),
    api.get(`${base}/recommendations`, { group, at: instantShown() }),
    api.get(`${base}/exceptions`),
    api.get(`${base}/tasks`),
  ]);
  if (stale(seq)) return;
  const rec = recs.find((r) => r.control === control);
  const list = devices;
  const rows = list.map((d) =>
    h(
      "tr",
      { "data-testid": "device", "data-device": d.device },
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.device)}?${new URLSearchParams(scopeParams())}`, "data-testid": "device-link" }, d.device)),
      h("td", {}, d.state, d.exception && d.exception !== "NONE" ? ` (exception: ${d.exception})` : ""),
      h("td", {}, fmt.instant(d.since)),
      h("td", {}, d.reason),
    ),
  );
  const back = h("p", {}, h("a", { href: `#/?${new URLSearchParams(scopeParams())}` }, "← Dashboard"));
  const detail = h(
    "section",
    { class: "card", "aria-labelledby": "h-detail" },
    h("h2", { id: "h-detail" }, info.title),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Control"),
      h("dd", {}, h("code", {}, info.control)),
      h("dt", {}, "Category"),
      h("dd", {}, info.category),
      h("dt", {}, "Remediation"),
      h("dd", { "data-testid": "remediation" }, info.remediation.replace("_", " ")),
      h("dt", {}, "What to do"),
      h("dd", { "data-testid": "remediation-text" }, info.remediation_text || "(the baseline gives no remediation text)"),
      h("dt", {}, "Why"),
      h("dd", { "data-testid": "rationale" }, info.rationale || "(the baseline gives no rationale)"),
      h("dt", {}, "Passes when"),
      h("dd", { "data-testid": "check" }, h("code", {}, info.check)),
      h("dt", {}, "Vulnerabilities"),
      h("dd", { "data-testid": "vulnerabilities" }, info.vulnerabilities.length ? info.vulnerabilities.join(", ") : "none listed"),
      h("dt", {}, "Points gained"),
      h("dd", {}, rec ? figure("detail-points-gained", rec.points_gained, `+${fmt.points(rec.points_gained)}`) : "0 (no device fails it now)"),
      h("dt", {}, "Misconfigured / applicable"),
      h(
        "dd",
        {},
        rec ? figure("detail-misconfigured", `${rec.misconfigured_devices}/${rec.applicable_devices}`, fmt.ratio(rec.misconfigured_devices, rec.applicable_devices)) : "0",
        rec && rec.excepted_devices ? ` (${rec.excepted_devices} excepted)` : "",
      ),
    ),
  );
  const mine = (xs) => xs.filter((x) => x.control === control);
  main().replaceChildren(
    back,
    h(
      "div",
      { class: "grid" },
      detail,
      tasksCard(base, control, group, mine(tasks)),
      exceptionsCard(base, control, group, mine(exceptions)),
      h(
        "section",
        { class: "card", "aria-labelledby": "h-devices" },
        h("h2", { id: "h-devices" }, "Misconfigured devices"),
        h("p", {}, figure("device-count", list.length, `${list.length} device${list.length === 1 ? "" : "s"}`), group ? ` in group ${group}` : ""),
        h(
          "button",
          {
            type: "button",
            "data-testid": "export-csv",
            onclick: async () => {
              try {
                await api.download(path, { group, state: "FAIL" }, `${control}-devices.csv`);
              } catch (e) {
                status(`Export failed: ${e.message}`, "error");
              }
            },
          },
          "Export CSV (for Excel)",
        ),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Device"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Since"), h("th", { scope: "col" }, "Why"))), h("tbody", {}, rows)),
      ),
    ),
  );
  status("");
}

// --- one device: its score and every control's state, with the evidence ---

async function deviceView(device) {
  const seq = renderSeq;
  const { tenant } = scope();
  status("Loading…");
  const d = await api.get(`${api.tenantPath(tenant)}/devices/${encodeURIComponent(device)}`, { at: instantShown() });
  if (stale(seq)) return;
  const inv = d.inventory;
  const order = { FAIL: 0, UNKNOWN: 1, PASS: 2, NOT_APPLICABLE: 3 };
  const controls = [...d.controls].sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.control.localeCompare(b.control));
  const evidence = (c) =>
    Object.entries(c.settings || {})
      .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
      .join("; ");
  main().replaceChildren(
    h("p", {}, h("a", { href: `#/?${new URLSearchParams(scopeParams())}` }, "← Dashboard")),
    h(
      "section",
      { class: "card", "aria-labelledby": "h-device" },
      h("h2", { id: "h-device" }, "Device ", h("code", {}, d.device)),
      h(
        "p",
        {},
        figure("device-percent", d.percent, fmt.percent(d.percent)),
        " · ",
        figure("device-points", d.points, fmt.points(d.points)),
        ` of ${fmt.points(d.max_points)} points`,
      ),
      inv ? h("p", { class: "help" }, `${inv.hostname || ""} · ${inv.os_family} ${inv.os_version} · groups: ${inv.groups.join(", ") || "none"}${inv.tags.length ? ` · tags: ${inv.tags.join(", ")}` : ""}`) : null,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Control", "State", "Since", "Passes when", "Evidence"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          controls.map((c) =>
            h(
              "tr",
              { "data-testid": "device-control", "data-control": c.control, "data-state": c.state },
              h("td", {}, c.title, h("div", { class: "help" }, c.control)),
              h("td", {}, c.state, c.exception && c.exception !== "NONE" ? ` (exception: ${c.exception})` : ""),
              h("td", {}, fmt.instant(c.since)),
              h("td", {}, h("code", {}, c.check)),
              h("td", {}, evidence(c)),
            ),
          ),
        ),
      ),
    ),
  );
  status("");
}

const READ_ONLY = "This token is read-only: the server refuses changes made with it.";

/** The control's remediation tasks, and the form that creates one (a due date, notes). */
function tasksCard(base, control, group, tasks) {
  const due = h("input", { id: "task-due", type: "date", required: true });
  const priority = h("select", { id: "task-priority" }, ["low", "medium", "high", "critical"].map((p) => h("option", { value: p, selected: p === "medium" }, p)));
  const notes = h("textarea", { id: "task-notes", rows: 2, maxlength: 4096 });
  const form = h(
    "form",
    {
      class: "stack",
      "data-testid": "task-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const t = await api.post(`${base}/tasks`, { control, group: group || undefined, due: `${due.value}T23:59:59Z`, priority: priority.value, notes: notes.value });
          await render();
          status(`Task ${t.id} created, due ${fmt.instant(t.due)}.`, "ok");
        } catch (e) {
          status(`The task was not created: ${e.message}`, "error");
        }
      },
    },
    h("h3", {}, "Request remediation"),
    h("label", { for: "task-due" }, "Due date"),
    due,
    h("label", { for: "task-priority" }, "Priority"),
    priority,
    h("label", { for: "task-notes" }, "Notes"),
    notes,
    document.body.dataset.write === "true" ? null : h("p", { class: "help" }, READ_ONLY),
    h("button", { type: "submit" }, "Create task"),
  );
  const exportAll = h(
    "button",
    {
      type: "button",
      "data-testid": "export-tasks",
      onclick: async () => {
        try {
          await api.download(`${base}/tasks`, {}, "remediation-tasks.csv");
        } catch (e) {
          status(`Export failed: ${e.message}`, "error");
        }
      },
    },
    "Export all remediation activity (CSV)",
  );
  return h(
    "section",
    { class: "card", "aria-labelledby": "h-tasks" },
    h("h2", { id: "h-tasks" }, "Remediation tasks"),
    exportAll,
    tasks.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Task", "Scope", "Due", "Status", "Notes"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            tasks.map((t) =>
              h("tr", { "data-testid": "task", "data-id": t.id }, h("td", {}, t.id), h("td", {}, t.group || "tenant"), h("td", {}, fmt.instant(t.due)), h("td", {}, t.status, t.overdue ? " (overdue)" : ""), h("td", {}, t.notes)),
            ),
          ),
        )
      : h("p", {}, "No task for this control."),
    form,
  );
}

/** The control's exceptions, and the form that adds one (a scope, a justification, a note). */
function exceptionsCard(base, control, group, exceptions) {
  const scopeKind = h("select", { id: "exc-scope" }, ["tenant", "group", "device", "tag"].map((k) => h("option", { value: k, selected: k === (group ? "group" : "tenant") }, k)));
  const value = h("input", { id: "exc-value", value: group || "", autocomplete: "off" });
  const justification = h(
    "select",
    { id: "exc-justification" },
    [
      ["risk_accepted", "Risk accepted"],
      ["planned_remediation", "Planned remediation"],
      ["third_party_control", "Third-party control"],
      ["alternate_mitigation", "Alternate mitigation"],
    ].map(([v, l]) => h("option", { value: v }, l)),
  );
  const expires = h("input", { id: "exc-expires", type: "date" });
  const note = h("textarea", { id: "exc-note", rows: 2, maxlength: 4096 });
  const form = h(
    "form",
    {
      class: "stack",
      "data-testid": "exception-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const e = await api.post(`${base}/exceptions`, {
            control,
            scope: scopeKind.value,
            scope_value: scopeKind.value === "tenant" ? "" : value.value.trim(),
            justification: justification.value,
            expires_at: expires.value ? `${expires.value}T23:59:59Z` : undefined,
            note: note.value,
          });
          await render();
          status(`Exception ${e.id} added.`, "ok");
        } catch (e) {
          status(`The exception was not added: ${e.message}`, "error");
        }
      },
    },
    h("h3", {}, "Add an exception"),
    h("label", { for: "exc-scope" }, "Applies to"),
    scopeKind,
    h("label", { for: "exc-value" }, "Group, device or tag (not for tenant)"),
    value,
    h("label", { for: "exc-justification" }, "Justification"),
    justification,
    h("label", { for: "exc-expires" }, "Expires (empty: never)"),
    expires,
    h("label", { for: "exc-note" }, "Note"),
    note,
    document.body.dataset.write === "true" ? null : h("p", { class: "help" }, READ_ONLY),
    h("button", { type: "submit" }, "Add exception"),
  );
  return h(
    "section",
    { class: "card", "aria-labelledby": "h-exceptions" },
    h("h2", { id: "h-exceptions" }, "Exceptions"),
    exceptions.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Exception", "Applies to", "Justification", "Expires", "Note"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            exceptions.map((e) =>
              h("tr", { "data-testid": "exception", "data-id": e.id }, h("td", {}, e.id), h("td", {}, e.scope, e.scope_value ? ` ${e.scope_value}` : ""), h("td", {}, e.justification.replace("_", " ")), h("td", {}, e.expires_at ? fmt.instant(e.expires_at) : "never"), h("td", {}, e.note)),
            ),
          ),
        )
      : h("p", {}, "No exception for this control."),
    form,
  );
}

// --- start ---

async function render() {
  if (!api.token()) return showLogin();
  const seq = ++renderSeq;
  const { path } = route();
  $("#tenant").value = scope().tenant;
  $("#group").value = scope().group;
  $("#at").value = scope().at;
  $("#f-category").value = scope().category;
  $("#f-remediation").value = scope().remediation;
  $("#f-os").value = scope().os;
  shownAt = instantOfUrl();
  if (!shownAt) {
    main().replaceChildren();
    return status(`"${scope().at}" is not an instant: use RFC 3339 (2026-11-01T12:00:00Z) or epoch milliseconds`, "error");
  }
  if (!scope().tenant) {
    main().replaceChildren();
    return status("This token may read no tenant with data yet.", "error");
  }
  try {
    if (path.startsWith("/control/")) await controlView(decodeURIComponent(path.slice("/control/".length)));
    else if (path.startsWith("/device/")) await deviceView(decodeURIComponent(path.slice("/device/".length)));
    else await dashboard();
  } catch (e) {
    if (stale(seq)) return;
    if (e.status === 401) return showLogin("The token was refused: log in again.");
    status(e.message, "error");
  }
}

async function start() {
  if (!api.token()) return showLogin();
  let me;
  try {
    me = await api.get("/api/v1/whoami");
  } catch (e) {
    // Only a refused token ends the session; a server or network failure keeps it for a retry.
    if (e.status === 401) {
      api.logout();
      return showLogin("The token was refused.");
    }
    main().replaceChildren(h("p", {}, h("button", { type: "button", onclick: () => start() }, "Try again")));
    return status(`Cannot reach the API: ${e.message}`, "error");
  }
  const select = $("#tenant");
  select.replaceChildren(...me.tenants.map((t) => h("option", { value: t }, t)));
  $("#scope").hidden = false;
  document.body.dataset.write = me.write ? "true" : "false";
  if (!me.tenants.length) {
    main().replaceChildren();
    return status(`Token "${me.name}" may read no tenant with data yet.`, "error");
  }
  if (!scope().tenant || !me.tenants.includes(scope().tenant)) {
    go("/", { tenant: me.tenants[0] });
    return; // the hashchange renders
  }
  await render();
}

function init() {
  $("#tenant").addEventListener("change", (e) => go("/", { tenant: e.target.value, group: "" }));
  $("#group").addEventListener("change", (e) => go(route().path, { group: e.target.value.trim() }));
  $("#at").addEventListener("change", (e) => {
    const v = e.target.value.trim();
    if (v && !/^\d+$/.test(v) && Number.isNaN(Date.parse(v))) return status(`"${v}" is not an instant: use RFC 3339, e.g. 2026-11-01T12:00:00Z`, "error");
    go(route().path, { at: v });
  });
  $("#without").addEventListener("change", () => render());
  for (const [id, key] of [["#f-category", "category"], ["#f-remediation", "remediation"], ["#f-os", "os"]]) {
    $(id).addEventListener("change", (e) => go("/", { [key]: e.target.value }));
  }
  $("#logout").addEventListener("click", () => {
    api.logout();
    location.hash = "";
    showLogin("Logged out.");
  });
  window.addEventListener("hashchange", () => render());
  start();
}

init();

// Ops dashboard: reads the insights JSON API (/v1/dashboard/*) with the user's API key and draws each
// panel with Plotly (served by the insights service itself: no CDN, no build step).
// body[data-state] is "loading" while a load runs, "ready" once every panel of it has rendered,
// "error" when a request failed (the problem's detail is in #error), "needs-key" without a key.
"use strict";
(() => {
  const KEY_STORAGE = "hub.dashboard.apiKey";
  const REFRESH_MS = 60_000;
  const STAGE_LABELS = { awareness: "Awareness", interest: "Interest", consideration: "Consideration",
                         purchase: "Purchase", repeat: "Repeat", loyal: "Loyal" };
  const CHANNEL_LABELS = { wechat_miniprogram: "mini-program", walk_in: "walk-in", pos: "POS" };
  const TIER_COLORS = { none: "#d5d9de", member: "#9ab8ef", bronze: "#b08d57", silver: "#aab2bd", gold: "#d4af37",
                        platinum: "#6c7a89", diamond: "#5dade2" };
  const PALETTE = ["#2f6fde", "#8e44ad", "#16a085", "#e67e22", "#c0392b", "#7f8c8d"];
  const COLORS = { good: "#2e8b57", neutral: "#b0b7bf", bad: "#c0392b", accent: "#2f6fde", warn: "#e67e22",
                   muted: "#616e7c" };
  const $ = (selector) => document.querySelector(selector);
  const state = { key: "", stores: null, defaultTz: "Asia/Shanghai", selected: null, seq: 0,
                  customerSeq: 0, controller: null, period: null };

  // ---- helpers --------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(path, status, body) {
      super(problemText(path, status, body));
      this.status = status;
    }
  }

  function problemText(path, status, body) {
    if (body && typeof body === "object" && (body.detail || body.title)) {
      let text = `${body.title || "Error"} (${body.status || status}): ${body.detail || ""}`;
      if (Array.isArray(body.errors) && body.errors.length) {
        text += " — " + body.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
      }
      return text;
    }
    return `HTTP ${status} from ${path}`;
  }

  async function api(path, params, signal) {
    const url = new URL(path, document.baseURI);  // relative: works under a path prefix too
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== "" && value != null) url.searchParams.set(name, value);
    }
    const response = await fetch(url, { signal, cache: "no-store",
      headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (!response.ok) throw new ApiError(path, response.status, body);
    return body;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  const pct = (f) => (f == null ? "–" : `${(f * 100).toFixed(1)}%`);
  const num = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
  const money = (minor) => (minor == null ? "–" : (minor / 100).toLocaleString("en-US",
    { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const minutes = (m) => (m == null ? "–" : m < 60 ? `${Math.round(m)} min` : `${Math.floor(m / 60)} h ${Math.round(m % 60)} min`);

  function storeTz(storeId) {
    const store = (state.stores || []).find((s) => s.store_id === storeId);
    return (store && store.timezone) || state.defaultTz;
  }

  function storeName(storeId) {
    if (!storeId) return "–";
    const store = (state.stores || []).find((s) => s.store_id === storeId);
    return store ? `${store.name} (${storeId})` : storeId;
  }

  function todayIn(tz) {
    try {
      return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" })
        .format(new Date());
    } catch { return new Date().toISOString().slice(0, 10); }
  }

  function addDays(isoDate, days) {
    const d = new Date(`${isoDate}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }

  function fmtTime(iso, tz) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    try {
      return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(d).replace(",", "");
    } catch { return d.toISOString().slice(0, 16).replace("T", " "); }
  }

  function bandBadge(band, text) {
    return el("span", { class: `band band-${band || "low"}`, text: text ?? band ?? "–" });
  }

  function showErrors(messages) {
    const box = $("#error");
    const unique = [...new Set(messages)];
    box.textContent = unique.join("\n");
    box.hidden = unique.length === 0;
  }

  function markRendered(panelId) {
    const panel = document.getElementById(panelId);
    panel.dataset.renders = String(Number(panel.dataset.renders || 0) + 1);
  }

  // ---- charts ----------------------------------------------------------------------------------------
  const BASE_LAYOUT = {
    margin: { l: 48, r: 48, t: 28, b: 36 },
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#1f2933" },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    legend: { orientation: "h", x: 0, y: 1.16, font: { size: 11 } },
    hovermode: "x unified",
  };
  const PLOT_CONFIG = { displayModeBar: false, responsive: true };

  // A count axis: whole numbers only, even when every count is 0 or 1.
  function countAxis(title, values) {
    const max = Math.max(0, ...values.filter((v) => v != null));
    return { title: { text: title }, rangemode: "tozero", gridcolor: "#eef0f2", tickformat: ",d",
             ...(max <= 5 ? { dtick: 1, range: [0, Math.max(max, 1) * 1.1] } : {}) };
  }

  // A date axis spanning the whole chosen period, one bar per day, week or month starting at `period`.
  const PERIOD = { day: 86_400_000, week: 7 * 86_400_000, month: "M1" };
  function periodAxis(grain) {
    const pad = { day: 1, week: 7, month: 31 }[grain];
    return { type: "date", range: [addDays(state.period.from, -pad), addDays(state.period.to, pad)],
             hoverformat: grain === "month" ? "%B %Y" : grain === "week" ? "week of %b %-d, %Y" : "%a %b %-d, %Y" };
  }

  function plot(panelId, traces, layout, empty) {
    const node = document.querySelector(`#${panelId} .chart`);
    const full = { ...BASE_LAYOUT, ...layout };
    if (empty) {
      full.annotations = [{ text: "No data for these filters", showarrow: false, xref: "paper", yref: "paper",
                            x: 0.5, y: 0.5, font: { size: 13, color: COLORS.muted } }];
    }
    return Plotly.react(node, traces, full, PLOT_CONFIG).then(() => markRendered(panelId));
  }

  function renderNps(d) {
    const points = d.points || [];
    const x = points.map((p) => p.period);
    const grain = d.grain || "week";
    const timed = { x, xperiod: PERIOD[grain], xperiodalignment: "middle" };
    const bar = (name, key, color) => ({ type: "bar", name, ...timed, y: points.map((p) => p[key]),
                                         marker: { color }, hovertemplate: "%{y}" });
    const t = d.total || {};
    $("#nps-total").textContent = `NPS ${t.nps == null ? "–" : Math.round(t.nps)} · ${num(t.responses)} responses`
      + ` · CSAT ${t.csat_avg == null ? "–" : Number(t.csat_avg).toFixed(2)} · by ${d.grain || "week"}`;
    return plot("panel-nps", [
      bar("Promoters", "promoters", COLORS.good),
      bar("Passives", "passives", COLORS.neutral),
      bar("Detractors", "detractors", COLORS.bad),
      { type: "scatter", mode: "lines+markers", name: "NPS", ...timed, y: points.map((p) => p.nps), yaxis: "y2",
        line: { color: COLORS.accent, width: 2 }, marker: { size: 5 }, hovertemplate: "%{y:.0f}" },
    ], {
      barmode: "stack",
      bargap: 0.15,
      xaxis: periodAxis(grain),
      yaxis: countAxis("responses", points.map((p) => p.responses)),
      yaxis2: { title: { text: "NPS" }, overlaying: "y", side: "right", range: [-110, 110], tickmode: "linear",
                tick0: 0, dtick: 50, zeroline: false, showgrid: false },
    }, points.length === 0);
  }

  function renderFunnel(d) {
    const stages = d.stages || [];
    const o = d.other || {};
    $("#funnel-other").textContent = `at risk ${num(o.at_risk)} · churned ${num(o.churned)} · win-back ${num(o.win_back)}`;
    return plot("panel-funnel", [{
      type: "funnel",
      y: stages.map((s) => STAGE_LABELS[s.stage] || s.stage),
      x: stages.map((s) => s.reached),
      text: stages.map((s) => (s.conversion == null ? num(s.reached) : `${num(s.reached)} · ${pct(s.conversion)}`)),
      textinfo: "text", textposition: "auto",
      customdata: stages.map((s) => [s.customers_now, pct(s.conversion)]),
      hovertemplate: "%{y}: %{x} reached<br>%{customdata[1]} of the previous stage<br>"
                     + "%{customdata[0]} in this stage now<extra></extra>",
      marker: { color: ["#9ab8ef", "#7ba2ea", "#5c8ce4", "#3e76df", "#2f62c0", "#254f9c"] },
      connector: { fillcolor: "#e4e7eb", line: { color: "#c7ccd1", width: 1 } },
    }], { margin: { l: 96, r: 16, t: 8, b: 16 }, hovermode: "closest", showlegend: false },
    stages.every((s) => !s.reached));
  }

  function riskColor(risk) {  // green -> orange -> red
    const stops = [[46, 139, 87], [230, 126, 34], [192, 57, 43]];
    const x = Math.min(Math.max(risk, 0), 1) * 2;
    const [a, b] = x < 1 ? [stops[0], stops[1]] : [stops[1], stops[2]];
    const t = x < 1 ? x : x - 1;
    return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * t)).join(",")})`;
  }

  function renderChurn(d) {
    const bands = d.bands || {};
    const chips = $("#churn-bands");
    chips.replaceChildren(...["high", "medium", "low"].flatMap((b) => [bandBadge(b, `${b} ${num(bands[b])}`), " "]));
    const hist = d.histogram || [];
    return plot("panel-churn", [{
      type: "bar",
      x: hist.map((h) => `${Number(h.from).toFixed(1)}–${Number(h.to).toFixed(1)}`),
      y: hist.map((h) => h.customers),
      marker: { color: hist.map((h) => riskColor((Number(h.from) + Number(h.to)) / 2)) },
      hovertemplate: "risk %{x}: %{y} customers<extra></extra>",
    }], { xaxis: { title: { text: "churn risk" }, type: "category" },
          yaxis: countAxis("customers", hist.map((h) => h.customers)),
          hovermode: "closest", showlegend: false, margin: { l: 48, r: 16, t: 8, b: 40 } },
    hist.every((h) => !h.customers));
  }

  function renderTiers(d) {
    const tiers = d.tiers || [];
    return plot("panel-tiers", [{
      type: "pie", hole: 0.5, sort: false, labels: tiers.map((t) => t.tier || "(none)"),
      values: tiers.map((t) => t.customers), textinfo: "label+percent",
      hovertemplate: "%{label}: %{value} customers (%{percent})<extra></extra>",
      marker: { colors: tiers.map((t, i) => TIER_COLORS[String(t.tier).toLowerCase()] || PALETTE[i % PALETTE.length]) },
    }], { margin: { l: 16, r: 16, t: 8, b: 8 }, legend: { orientation: "v", x: 1, y: 0.5 }, hovermode: "closest" },
    tiers.every((t) => !t.customers));
  }

  function renderChannels(d) {
    const rows = d.channels || [];
    const x = rows.map((c) => CHANNEL_LABELS[c.channel] || c.channel);
    return plot("panel-channels", [
      { type: "bar", name: "Acquired", x, y: rows.map((c) => c.acquired), marker: { color: "#9ab8ef" } },
      { type: "bar", name: "Converted", x, y: rows.map((c) => c.converted), marker: { color: COLORS.accent } },
      { type: "scatter", mode: "markers", name: "Conversion %", x, yaxis: "y2",
        y: rows.map((c) => (c.conversion == null ? null : c.conversion * 100)),
        marker: { color: COLORS.good, size: 11, symbol: "diamond" }, hovertemplate: "%{y:.1f}%" },
      { type: "scatter", mode: "markers", name: "90-day retention %", x, yaxis: "y2",
        y: rows.map((c) => (c.retention_90d == null ? null : c.retention_90d * 100)),
        marker: { color: COLORS.warn, size: 11, symbol: "circle" }, hovertemplate: "%{y:.1f}%" },
    ], { barmode: "group", xaxis: { type: "category", tickangle: 0, automargin: true },
         yaxis: countAxis("customers", rows.map((c) => c.acquired)),
         yaxis2: { title: { text: "%" }, overlaying: "y", side: "right", range: [0, 100], tickmode: "linear",
                   tick0: 0, dtick: 25, showgrid: false } },
    rows.length === 0);
  }

  function renderComplaints(d) {
    const stat = (label, value) => el("div", { class: "stat" }, el("b", { text: value }), el("span", { text: label }));
    $("#complaint-stats").replaceChildren(
      stat("opened", num(d.opened)), stat("resolved", num(d.resolved)),
      stat("first-response breaches", num(d.first_response_breaches)),
      stat("resolution breaches", num(d.resolution_breaches)), stat("breach rate", pct(d.breach_rate)),
      stat("median resolution (business)", minutes(d.median_resolution_business_minutes)));
    const days = d.by_day || [];
    const timed = { x: days.map((p) => p.period), xperiod: PERIOD.day, xperiodalignment: "middle" };
    return plot("panel-complaints", [
      { type: "bar", name: "Opened", ...timed, y: days.map((p) => p.opened), marker: { color: "#9ab8ef" } },
      { type: "bar", name: "Resolved", ...timed, y: days.map((p) => p.resolved), marker: { color: COLORS.good } },
      { type: "scatter", mode: "markers", name: "SLA breaches", ...timed, y: days.map((p) => p.breaches || null),
        marker: { color: COLORS.bad, size: 8, symbol: "x" } },
    ], { barmode: "group", xaxis: periodAxis("day"), margin: { l: 40, r: 16, t: 24, b: 30 },
         yaxis: countAxis("", days.flatMap((p) => [p.opened, p.resolved, p.breaches])) }, days.length === 0);
  }

  function renderAtRisk(d) {
    const rows = d.at_risk || [];
    const body = $("#panel-at-risk tbody");
    if (!rows.length) {
      body.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: "6", text: "No customers at risk for these filters" })));
    } else {
      body.replaceChildren(...rows.map((c) => {
        const tr = el("tr", { tabindex: "0", "data-customer-id": c.customer_id, title: "Show this customer" },
          el("td", { class: "id", title: c.customer_id, text: `${String(c.customer_id).slice(0, 8)}…` }),
          el("td", { class: "num" }, bandBadge(c.band, pct(c.risk))),
          el("td", { text: c.stage || "–" }),
          el("td", { class: "num", text: c.overdue_days == null ? "–" : `${c.overdue_days} d` }),
          el("td", { text: [c.value_tier, c.rfm_segment].filter(Boolean).join(" · ") || "–" }),
          el("td", { text: (c.reasons || []).join("; ") }));
        if (c.customer_id === state.selected) tr.classList.add("selected");
        return tr;
      }));
    }
    markRendered("panel-at-risk");
  }

  // ---- the drill-down --------------------------------------------------------------------------------
  function renderCustomer(c) {
    const tz = storeTz(c.home_store_id);
    const rfm = c.rfm || {};
    const facts = [
      ["Customer", el("span", { class: "id", text: c.customer_id })],
      ["Stage", c.stage || "–"],
      ["Churn risk", el("span", {}, bandBadge(c.band, pct(c.risk)))],
      ["RFM", `R${rfm.r ?? "–"} F${rfm.f ?? "–"} M${rfm.m ?? "–"} · ${rfm.segment || "–"} — last paid visit `
              + `${rfm.recency_days == null ? "never" : `${rfm.recency_days} days ago`}, ${num(rfm.frequency)} visits `
              + `and ${money(rfm.monetary_minor)} in 12 months`],
      ["Value tier", c.value_tier || "–"],
      ["Loyalty tier", c.tier || "–"],
      ["Home store", storeName(c.home_store_id)],
    ];
    const dl = el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
    const reasons = (c.reasons || []).length
      ? el("ul", { class: "reasons" }, ...c.reasons.map((r) => el("li", { text: r })))
      : el("p", { class: "hint", text: "Nothing raises this customer's risk." });
    const table = (head, rows) => el("table", {},
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))),
      el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: String(head.length), text: "none" }))])));
    const transitions = table(["At", "From", "To", "Reason"], (c.transitions || []).map((t) => el("tr", {},
      el("td", { text: fmtTime(t.at, tz) }), el("td", { text: t.from_stage || "–" }), el("td", { text: t.to_stage }),
      el("td", { text: t.reason || "" }))));
    const touchpoints = table(["When", "Type", "Channel", "Store"], (c.recent_touchpoints || []).map((t) => el("tr", {},
      el("td", { text: fmtTime(t.occurred_at, storeTz(t.store_id) || tz) }), el("td", { text: t.type }),
      el("td", { text: t.channel }), el("td", { text: t.store_id ? storeName(t.store_id) : "online" }))));
    $("#panel-customer .customer").replaceChildren(dl, el("h3", { text: "Reasons" }), reasons,
      el("h3", { text: "Stage transitions" }), transitions, el("h3", { text: "Recent touchpoints" }), touchpoints);
  }

  async function showCustomer(customerId) {
    const panel = $("#panel-customer");
    const seq = ++state.customerSeq;
    state.selected = customerId;
    for (const tr of document.querySelectorAll("#panel-at-risk tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.customerId === customerId);
    }
    panel.dataset.state = "loading";
    try {
      const customer = await api(`v1/dashboard/customers/${encodeURIComponent(customerId)}`);
      if (seq !== state.customerSeq) return;
      renderCustomer(customer);
      panel.dataset.customerId = customerId;
      panel.dataset.state = "ready";
      markRendered("panel-customer");
    } catch (error) {
      if (seq !== state.customerSeq) return;
      $("#panel-customer .customer").replaceChildren(el("p", { class: "hint", text: error.message }));
      panel.dataset.state = "error";
      throw error;
    }
  }

  // ---- loading ---------------------------------------------------------------------------------------
  async function loadStores(signal) {
    const data = await api("v1/dashboard/stores", {}, signal);
    state.stores = data.stores || [];
    state.defaultTz = data.default_timezone || state.defaultTz;
    const select = $("#f-store");
    const current = select.value;
    select.replaceChildren(el("option", { value: "", text: "All stores" }),
      ...state.stores.map((s) => el("option", { value: s.store_id, text: s.name || s.store_id })));
    select.value = state.stores.some((s) => s.store_id === current) ? current : "";
    if (!$("#f-to").value || !$("#f-from").value) {  // default: the last 90 days, in the chain's zone
      const today = todayIn(state.defaultTz);
      $("#f-to").value = today;
      $("#f-from").value = addDays(today, -89);  // as the API defaults: 90 days with today
    }
  }

  async function load() {
    if (!state.key) {
      showErrors(["Enter an API key (a tenant key with the ops role) to load the dashboard."]);
      document.body.dataset.state = "needs-key";
      $("#api-key").focus();
      return;
    }
    if (typeof Plotly === "undefined") {
      showErrors(["The charting library did not load (dashboard/assets/plotly.min.js)."]);
      document.body.dataset.state = "error";
      return;
    }
    if (state.controller) state.controller.abort();
    const controller = (state.controller = new AbortController());
    const seq = ++state.seq;
    document.body.dataset.state = "loading";
    const errors = [];
    try {
      if (!state.stores) await loadStores(controller.signal);
      const filters = { store_id: $("#f-store").value, from: $("#f-from").value, to: $("#f-to").value,
                        channel: $("#f-channel").value };
      state.period = { from: filters.from, to: filters.to };
      const get = (path, extra) => api(`v1/dashboard/${path}`, { ...filters, ...extra }, controller.signal);
      const panels = [
        [get("nps", { grain: $("#f-grain").value }), renderNps],
        [get("funnel"), renderFunnel],
        [get("churn", { limit: 50 }), (d) => { renderAtRisk(d); return renderChurn(d); }],
        [get("channels"), renderChannels],
        [get("complaints"), renderComplaints],
        [get("tiers"), renderTiers],
      ];
      const results = await Promise.allSettled(panels.map(([request]) => request));
      if (seq !== state.seq) return;  // a newer load took over
      const renders = [];
      results.forEach((result, i) => {
        if (result.status === "fulfilled") renders.push(panels[i][1](result.value));
        else errors.push(result.reason);
      });
      if (state.selected) renders.push(showCustomer(state.selected).catch((e) => errors.push(e)));
      await Promise.all(renders);
    } catch (error) {
      errors.push(error);
    }
    if (seq !== state.seq) return;
    const real = errors.filter((e) => e.name !== "AbortError");
    if (real.some((e) => e.status === 401)) state.stores = null;  // a new key loads the stores again
    showErrors(real.map((e) => e.message || String(e)));
    $("#updated-at").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")} · refreshes every 60 s`;
    document.body.dataset.state = real.length ? "error" : "ready";
  }

  // ---- wiring ----------------------------------------------------------------------------------------
  function init() {
    const params = new URLSearchParams(location.search);
    if (params.has("key")) {  // take the key out of the address bar (and history) once stored
      localStorage.setItem(KEY_STORAGE, params.get("key").trim());
      params.delete("key");
      history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : "") + location.hash);
    }
    state.key = localStorage.getItem(KEY_STORAGE) || "";
    $("#api-key").value = state.key;

    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("#api-key").value.trim();
      if (state.key) localStorage.setItem(KEY_STORAGE, state.key);
      else localStorage.removeItem(KEY_STORAGE);
      state.stores = null;
      load();
    });
    $("#filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    for (const id of ["#f-store", "#f-from", "#f-to", "#f-grain", "#f-channel"]) {
      $(id).addEventListener("change", () => load());
    }
    const tbody = $("#panel-at-risk tbody");
    const pick = (event) => {
      const row = event.target.closest("tr[data-customer-id]");
      if (row) showCustomer(row.dataset.customerId).catch((e) => showErrors([e.message]));
    };
    tbody.addEventListener("click", pick);
    tbody.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); pick(event); }
    });
    setInterval(() => {
      if (!document.hidden && document.body.dataset.state !== "loading") load();
    }, REFRESH_MS);
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

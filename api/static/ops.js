// cityops operations page: areas with live rates, a device schematic and the active alerts,
// kept current by the live feed (Server-Sent Events, /api/v1/live). No build step, no CDN.
"use strict";
(function () {
  const API = "/api/v1";
  const KEY_STORE = "cityops.apiKey";
  const RATES = [
    ["lighting_rate", 0.99, 0.95],
    ["room_temp_compliance", 0.9, 0.8],
    ["charger_availability", 0.95, 0.85],
  ];
  // The data coverage reported beside each rate (docs/rates.md): a device with no data counts
  // against the rate, so a low rate with low coverage is missing data, not an outage.
  const COVERAGE = {
    lighting_rate: "lighting_coverage",
    room_temp_compliance: "room_temp_coverage",
    charger_availability: "charger_online",
  };
  const FULL_COVERAGE = 0.95;
  const $ = (sel) => document.querySelector(sel);
  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    source: null,
    events: 0,
    areas: new Map(), // code -> snapshot
    alerts: new Map(), // alert id -> alert
    dots: new Map(), // device id -> circle
    mapTimer: null,
    device: null, // the followed device: {id, source}
    alertPage: 0, // the page of the alert list shown
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function say(text, ok) {
    const box = $("#message");
    box.textContent = text;
    box.className = ok ? "message ok" : "message";
    box.hidden = !text;
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ "X-API-Key": state.key, Accept: "application/json" }, opts.headers);
    const res = await fetch(API + path, opts);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const msg = body && body.error ? body.error.message : res.status + " " + res.statusText;
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // --- areas ------------------------------------------------------------------------------

  function pct(rate) {
    if (!rate || rate.value === null || rate.value === undefined) return ["—", "none", "no data"];
    return [(100 * rate.value).toFixed(1) + " %", rate.partial ? "partial" : "",
      `${rate.numerator.toFixed(0)} / ${rate.denominator.toFixed(0)}, hour ${rate.hour}` +
      (rate.partial ? " (still filling)" : "")];
  }

  function grade(value, good, fair) {
    if (value === null || value === undefined) return "none";
    return value >= good ? "good" : value >= fair ? "fair" : "poor";
  }

  function renderArea(snap) {
    const tbody = $("#areas tbody");
    let row = tbody.querySelector(`tr[data-area="${CSS.escape(snap.area)}"]`);
    const cells = [el("td", { text: `${snap.name} `, title: snap.name_en || "" }, el("span", { class: "muted small", text: snap.area }))];
    for (const [metric, good, fair] of RATES) {
      const rate = snap.rates[metric];
      const [text, extra, title] = pct(rate);
      const cov = snap.rates[COVERAGE[metric]];
      const low = cov && cov.value !== null && cov.value !== undefined && cov.value < FULL_COVERAGE
        && rate && rate.value !== null && rate.value !== undefined;
      if (low) {
        const share = (100 * cov.value).toFixed(0);
        cells.push(el("td", {
          class: `num lowcov ${extra}`, "data-metric": metric,
          title: `${title}; data covers ${share} % of it (no data counts as not met)`,
          text,
        }, el("span", { class: "muted small", "data-coverage": share, text: ` · data ${share} %` })));
      } else {
        cells.push(el("td", { class: `num ${grade(rate && rate.value, good, fair)} ${extra}`, "data-metric": metric, title, text }));
      }
    }
    const a = snap.alerts;
    cells.push(el("td", { class: `num ${a.firing ? "poor" : "good"}`, "data-metric": "open_alerts",
      text: a.firing ? `${a.firing} (${a.unacked} unacked)` : "0" }));
    let total = 0, online = 0, offline = 0;
    for (const d of Object.values(snap.devices)) { total += d.total; online += d.online; offline += d.offline; }
    cells.push(el("td", { class: "num", "data-metric": "devices", title: `${offline} offline`, text: `${online} / ${total}` }));
    const fresh = el("tr", { "data-area": snap.area, "data-devices": String(total) }, ...cells);
    if (row) {
      fresh.classList.add("flash");
      row.replaceWith(fresh);
    } else {
      const rows = [...tbody.children];
      const after = rows.find((r) => r.dataset.area > snap.area);
      tbody.insertBefore(fresh, after || null);
    }
    row = fresh;
    row.hidden = total === 0 && !$("#show-empty").checked;
  }

  // --- alerts -----------------------------------------------------------------------------

  // The alert list: firing alerts newest first, ALERT_PAGE top-level rows a page. A member alert
  // inhibited by a firing group alert (a lamp of a dark cabinet) is listed under that alert,
  // collapsed and marked, not beside it; the count is every firing alert, members included.
  const ALERT_PAGE = 100;

  function alertRow(al, inhibited) {
    const button = el("button", { type: "button", class: "ack", text: al.acked_by ? `acked by ${al.acked_by}` : "Acknowledge" });
    if (al.acked_by) button.disabled = true;
    button.addEventListener("click", () => acknowledge(al.id, button));
    const rule = el("span", { text: al.rule });
    if (inhibited) rule.append(el("span", { class: "tag inhibited", text: "inhibited", title: "covered by its group alert: not notified on its own" }));
    return el("li", { "data-alert-id": String(al.id), "data-acked": al.acked_by ? "yes" : "no", "data-inhibited": inhibited ? "yes" : "no" },
      el("span", { class: `sev sev-${al.severity}`, text: al.severity }),
      rule,
      el("span", { text: al.summary || "" }),
      el("span", { class: "extra muted", text: [al.area_code, al.device_id].filter(Boolean).join(" · ") }),
      el("span", { class: "extra muted", text: new Date(al.fired_at || al.started_at).toLocaleString() }),
      button);
  }

  function renderAlerts() {
    const list = $("#alerts");
    list.replaceChildren();
    const newest = (x, y) => (y.fired_at || y.started_at).localeCompare(x.fired_at || x.started_at);
    const all = [...state.alerts.values()];
    const parents = new Set(all.map((al) => al.fingerprint).filter(Boolean));
    const members = new Map(); // parent fingerprint -> its inhibited member alerts
    const top = [];
    for (const al of all) {
      if (al.inhibited_by && parents.has(al.inhibited_by)) {
        if (!members.has(al.inhibited_by)) members.set(al.inhibited_by, []);
        members.get(al.inhibited_by).push(al);
      } else top.push(al);
    }
    top.sort(newest);
    const pages = Math.max(1, Math.ceil(top.length / ALERT_PAGE));
    state.alertPage = Math.min(state.alertPage || 0, pages - 1);
    for (const al of top.slice(state.alertPage * ALERT_PAGE, (state.alertPage + 1) * ALERT_PAGE)) {
      const row = alertRow(al, Boolean(al.inhibited_by));
      const under = members.get(al.fingerprint);
      if (under && under.length) {
        under.sort(newest);
        const inner = el("ul", { class: "members" });
        for (const m of under) inner.append(alertRow(m, true));
        row.append(el("details", { class: "members", "data-members": String(under.length) },
          el("summary", { text: `${under.length} inhibited member alert${under.length === 1 ? "" : "s"}` }), inner));
      }
      list.append(row);
    }
    const inhibited = all.length - top.length;
    $("#alert-count").textContent = `${all.length} firing` + (inhibited ? ` (${inhibited} inhibited under their group alert)` : "");
    const pager = $("#alert-pager");
    pager.hidden = pages <= 1;
    $("#alert-page").textContent = `page ${state.alertPage + 1} of ${pages}`;
    $("#alert-prev").disabled = state.alertPage === 0;
    $("#alert-next").disabled = state.alertPage >= pages - 1;
  }

  function setDotState(dot, st) {
    for (const c of [...dot.classList]) if (c.startsWith("st-")) dot.classList.remove(c);
    dot.classList.add(`st-${st}`);
    dot.dataset.state = st;
  }

  function applyAlert(al) {
    if (al.state === "firing") state.alerts.set(al.id, al);
    else state.alerts.delete(al.id);
    if (al.device_id && state.dots.has(al.device_id)) {
      const dot = state.dots.get(al.device_id);
      if (al.state === "firing") setDotState(dot, "alarm");
      else if (dot.classList.contains("st-alarm")) setDotState(dot, "online");
    }
  }

  async function acknowledge(id, button) {
    button.disabled = true;
    try {
      const al = await api(`/alerts/${id}/ack`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ comment: "acknowledged on the operations page" }),
      });
      applyAlert(al);
      renderAlerts();
      say(`alert ${id} acknowledged`, true);
    } catch (err) {
      button.disabled = false;
      say(err.status === 403 ? `acknowledging needs a duty key: ${err.message}` : `acknowledge failed: ${err.message}`);
    }
  }

  async function loadAlerts() {
    // Every firing alert, a page of at most 1000 at a time (the API's cap): the count the page
    // shows is the true one, however many fire. Bounded, so a runaway never hangs the page.
    const found = new Map();
    let cursor = null;
    for (let i = 0; i < 100; i++) {
      const page = await api("/alerts?state=firing&limit=1000" + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
      for (const al of page.items) found.set(al.id, al);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    state.alerts = found;
    renderAlerts();
  }

  // --- the schematic ----------------------------------------------------------------------

  async function loadMap() {
    const data = await api("/live/devices");
    const svg = $("#map");
    const rows = data.devices;
    $("#map-count").textContent = `${rows.length}${data.truncated ? "+" : ""} positioned`;
    if (!rows.length) { svg.replaceChildren(); state.dots.clear(); return; }
    // The periodic refresh of an unchanged fleet only recolours the dots whose state changed:
    // rebuilding tens of thousands of SVG nodes every 30 s would stall the page each time.
    if (rows.length === state.dots.size && rows.every((row) => state.dots.has(row[0]))) {
      for (const [id, kind, area, , , st] of rows) {
        const dot = state.dots.get(id);
        if (dot.dataset.state !== st) setDotState(dot, st);
        dot.dataset.kind = kind;
        dot.dataset.area = area;
      }
      return;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const r of rows) { x0 = Math.min(x0, r[3]); x1 = Math.max(x1, r[3]); y0 = Math.min(y0, r[4]); y1 = Math.max(y1, r[4]); }
    const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180); // degrees of longitude are shorter
    const w = Math.max((x1 - x0) * k, 1e-4), h = Math.max(y1 - y0, 1e-4);
    const scale = 1000 / Math.max(w, h);
    const width = w * scale + 20, height = h * scale + 20;
    svg.setAttribute("viewBox", `-10 -10 ${width} ${height}`);
    const r = Math.max(2, Math.min(6, 2500 / Math.sqrt(rows.length) / 10));
    const ns = "http://www.w3.org/2000/svg";
    const frag = document.createDocumentFragment();
    state.dots.clear();
    for (const [id, kind, area, lon, lat, st] of rows) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", ((lon - x0) * k * scale).toFixed(1));
      c.setAttribute("cy", ((y1 - lat) * scale).toFixed(1));
      c.setAttribute("r", String(r));
      c.setAttribute("data-device", id);
      c.dataset.kind = kind;
      c.dataset.area = area;
      setDotState(c, st);
      if (state.device && state.device.id === id) c.classList.add("selected");
      frag.append(c);
      state.dots.set(id, c);
    }
    svg.replaceChildren(frag);
  }

  // One listener for every dot (not one per dot: a district has tens of thousands).
  function mapDot(event) {
    const dot = event.target.closest && event.target.closest("circle[data-device]");
    return dot && state.dots.get(dot.dataset.device) === dot ? dot : null;
  }

  function wireMap() {
    const svg = $("#map");
    svg.addEventListener("click", (event) => {
      const dot = mapDot(event);
      if (dot) follow(dot.dataset.device, dot.dataset.kind, dot.dataset.area);
    });
    svg.addEventListener("mouseover", (event) => {
      const dot = mapDot(event);
      if (dot) {
        $("#map-hover").textContent =
          `${dot.dataset.device} · ${dot.dataset.kind} · ${dot.dataset.area} · ${dot.dataset.state}`;
      }
    });
  }

  // --- one device's readings -------------------------------------------------------------

  function addReading(ts, values) {
    // Newest first, each timestamp once (the latest from REST may also come over the feed).
    const list = $("#device-readings");
    const t = Date.parse(ts); // compare instants: the API and the feed spell UTC differently
    if ([...list.children].some((li) => Number(li.dataset.t) === t)) return;
    const parts = Object.entries(values).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`);
    const li = el("li", { "data-t": String(t), text: `${new Date(t).toLocaleString()}  ${parts.join("  ")}` });
    const after = [...list.children].find((other) => Number(other.dataset.t) < t);
    list.insertBefore(li, after || null);
    while (list.children.length > 50) list.lastChild.remove();
  }

  function unfollow() {
    if (state.device) {
      state.device.source.close();
      const dot = state.dots.get(state.device.id);
      if (dot) dot.classList.remove("selected");
    }
    state.device = null;
    $("#device").hidden = true;
  }

  async function follow(id, kind, area) {
    unfollow();
    $("#device").hidden = false;
    $("#device").dataset.device = id;
    $("#device-title").textContent = `${id} (${kind}, ${area})`;
    const list = $("#device-readings");
    list.replaceChildren();
    const dot = state.dots.get(id);
    if (dot) dot.classList.add("selected");
    const source = new EventSource(`${API}/live?types=reading&devices=${encodeURIComponent(id)}&api_key=${encodeURIComponent(state.key)}`);
    state.device = { id, source };
    source.addEventListener("reading", (ev) => {
      const r = JSON.parse(ev.data);
      addReading(r.ts, r.values);
    });
    try {
      const latest = await api(`/devices/${encodeURIComponent(id)}/latest`);
      const online = latest.online === null ? "no status yet" : latest.online ? "online" : "offline";
      $("#device-state").textContent = `${online}; following new readings live`;
      if (latest.reading) addReading(latest.reading.ts, latest.reading.values);
    } catch (err) {
      $("#device-state").textContent = `latest reading: ${err.message}`;
    }
  }

  // --- the live feed ----------------------------------------------------------------------

  function feed(st, text) {
    $("#feed").dataset.state = st;
    $("#feed-text").textContent = text;
  }

  function count() {
    state.events += 1;
    $("#event-count").textContent = String(state.events);
  }

  function connect() {
    if (state.source) state.source.close();
    feed("connecting", "connecting …");
    const src = new EventSource(`${API}/live?types=alert,snapshot&api_key=${encodeURIComponent(state.key)}`);
    state.source = src;
    src.onopen = () => feed("open", "live");
    src.addEventListener("snapshot", (ev) => {
      count();
      const snap = JSON.parse(ev.data);
      state.areas.set(snap.area, snap);
      renderArea(snap);
    });
    src.addEventListener("alert", (ev) => {
      count();
      applyAlert(JSON.parse(ev.data).alert);
      renderAlerts();
    });
    src.addEventListener("overflow", () => feed("connecting", "too slow, reconnecting …"));
    src.onerror = async () => {
      if (src.readyState === EventSource.CLOSED) {
        feed("error", "disconnected");
        // EventSource hides the status: ask the API why (e.g. an invalid key).
        try { await api("/alerts?limit=1"); setTimeout(connect, 3000); }
        catch (err) { say(`live feed refused: ${err.message}`); }
      } else {
        feed("connecting", "reconnecting …");
      }
    };
  }

  async function start() {
    $("#key-forget").hidden = !state.key;
    if (!state.key) {
      say("Enter an API key: the one `cityops demo` printed, or one from `cityops keys create`.");
      return;
    }
    say("");
    try {
      await Promise.all([loadAlerts(), loadMap()]);
    } catch (err) {
      say(`cannot load: ${err.message}`);
      if (err.status === 401) return;
    }
    connect();
    clearInterval(state.mapTimer);
    state.mapTimer = setInterval(() => loadMap().catch(() => {}), 30000);
  }

  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) return;
    state.key = key;
    sessionStorage.setItem(KEY_STORE, key);
    $("#key-input").value = "";
    start();
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    state.key = "";
    if (state.source) state.source.close();
    unfollow();
    feed("idle", "not connected");
    start();
  });
  $("#device-close").addEventListener("click", unfollow);
  $("#alert-prev").addEventListener("click", () => { state.alertPage -= 1; renderAlerts(); });
  $("#alert-next").addEventListener("click", () => { state.alertPage += 1; renderAlerts(); });
  wireMap();
  $("#show-empty").addEventListener("change", () => {
    for (const snap of state.areas.values()) renderArea(snap);
  });
  start();
})();

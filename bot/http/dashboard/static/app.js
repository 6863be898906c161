// opsgate's dashboard: signs in with Telegram's initData (or the session a login link set),
// polls /app/api/state (ETag: an unchanged state costs a 304) and draws it. Every text from
// the server goes in through textContent: nothing it says is ever parsed as HTML.
"use strict";

const POLL_MS = 1500;
const session = { csrf: "", roles: [] };
let etag = "";
let lastState = null;
let filters = new URLSearchParams();
let pollTimer = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "data") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function telegramInitData() {
  const tg = window.Telegram && window.Telegram.WebApp;
  if (tg && tg.initData) return tg.initData;
  // Telegram passes it in the fragment: #tgWebAppData=<percent-encoded>&tgWebAppVersion=...
  for (const part of location.hash.slice(1).split("&")) {
    const [key, value] = part.split("=", 2);
    if (key === "tgWebAppData" && value) return decodeURIComponent(value);
  }
  return "";
}

function applyTelegramTheme() {
  for (const part of location.hash.slice(1).split("&")) {
    const [key, value] = part.split("=", 2);
    if (key !== "tgWebAppThemeParams" || !value) continue;
    try {
      const theme = JSON.parse(decodeURIComponent(value));
      for (const [name, color] of Object.entries(theme)) {
        if (/^#[0-9a-fA-F]{3,8}$/.test(String(color))) {
          document.documentElement.style.setProperty("--tg-" + name.replace(/_/g, "-"), color);
        }
      }
    } catch (e) { /* a theme we cannot read: keep ours */ }
  }
}

function say(text, bad) {
  const message = document.getElementById("message");
  message.textContent = text || "";
  message.className = bad ? "bad" : "";
}

async function call(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {}; }
  return { status: response.status, ok: response.ok, data };
}

async function signIn() {
  const initData = telegramInitData();
  let answer;
  if (initData) {
    answer = await call("POST", "/app/auth/telegram", { init_data: initData });
    // initData stays out of the address bar, the history and any screenshot.
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    answer = await call("GET", "/app/api/session");
  }
  if (!answer.ok) {
    document.getElementById("signed-out").hidden = false;
    document.getElementById("live").textContent = "signed out";
    if (answer.status !== 401 || initData) say(answer.data.error || "Sign-in failed.", true);
    return false;
  }
  session.csrf = answer.data.csrf;
  session.roles = answer.data.roles;
  const roles = answer.data.roles.length ? " · " + answer.data.roles.join(", ") : "";
  document.getElementById("who").textContent = answer.data.name + roles;
  document.getElementById("logout").hidden = false;
  document.getElementById("main").hidden = false;
  return true;
}

async function poll() {
  clearTimeout(pollTimer);
  const live = document.getElementById("live");
  try {
    const query = filters.toString();
    const response = await fetch("/app/api/state" + (query ? "?" + query : ""), {
      headers: etag ? { "If-None-Match": etag } : {}, credentials: "same-origin",
    });
    if (response.status === 401 || response.status === 403) {
      live.textContent = "signed out";
      document.getElementById("main").hidden = true;
      document.getElementById("signed-out").hidden = false;
      return;
    }
    if (response.status === 200) {
      etag = response.headers.get("ETag") || "";
      lastState = await response.json();
      render(lastState);
    }
    if (response.ok || response.status === 304) {
      live.textContent = "live";
      live.className = "pill ok";
      live.dataset.updated = new Date().toISOString();
    } else {
      live.textContent = "error " + response.status;
      live.className = "pill bad";
    }
  } catch (e) {
    live.textContent = "offline";
    live.className = "pill bad";
  }
  pollTimer = setTimeout(poll, document.hidden ? POLL_MS * 4 : POLL_MS);
}

async function act(path, body, button) {
  if (button) button.disabled = true;
  const answer = await call("POST", path, body === undefined ? {} : body);
  say(answer.ok ? answer.data.message : answer.data.error || "Refused (" + answer.status + ").", !answer.ok);
  etag = "";
  await poll();
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return Math.round(seconds) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "–" : (ratio * 100).toFixed(1) + "%";
}

const STEP_ICON = { running: "⏳", ok: "✅", failed: "❌", skipped: "⏭" };

function replace(id, ...nodes) {
  const target = document.getElementById(id);
  target.replaceChildren(...nodes.flat());
}

function rows(tableId, items, empty, columns) {
  const body = document.querySelector("#" + tableId + " tbody");
  const width = document.querySelectorAll("#" + tableId + " thead th").length;
  body.replaceChildren(...(items.length ? items : [el("tr", {}, el("td", { colspan: width, class: "muted" }, empty))]));
}

function renderDeploys(state) {
  const nodes = state.deployments.map((d) => el("section", { class: "deploy", data: { id: d.id, state: d.state } },
    el("div", { class: "title" },
      el("b", {}, "#" + d.id + " " + (d.kind === "rollback" ? "Rolling back " : "Deploying ") + d.service + " "),
      el("code", {}, d.version), " to " + d.environment, el("span", { class: "muted" }, " · " + d.state.replace(/_/g, " ") + " · by " + d.requested_by)),
    d.steps.length
      ? el("ol", { class: "steps" }, d.steps.map((s) => el("li", { class: "step", data: { status: s.status } },
          (STEP_ICON[s.status] || "•") + " " + s.title + (s.status === "running" ? "" : " — " + s.seconds.toFixed(2) + " s"),
          s.detail ? el("div", { class: "detail" }, s.detail) : null)))
      : el("p", { class: "muted" }, d.state === "awaiting_approval" ? "Waiting for sign-off." : "No steps yet."),
    state.may.abort ? el("button", { type: "button", class: "abort danger", data: { id: d.id },
      on: { click: (e) => act("/app/api/deployments/" + d.id + "/abort", {}, e.target) } }, "⏹ Abort") : null));
  replace("deploys", nodes.length ? nodes : el("p", { class: "muted" }, "Nothing is deploying."));
}

function renderSignoffs(state) {
  const nodes = state.signoffs.map((r) => {
    const deployment = [...state.deployments, ...state.history].find((d) => d.id === r.deployment_id);
    const what = deployment ? deployment.service + " " + deployment.version + " to " + deployment.environment : "deploy #" + r.deployment_id;
    return el("section", { class: "signoff", data: { request: r.id, deployment: r.deployment_id } },
      el("div", { class: "title" }, el("b", {}, "#" + r.deployment_id + " "), what,
        el("span", { class: "muted" }, " · asked by " + r.requested_by + " · " + (r.any_role ? "any one role" : "every role"))),
      r.roles.map((role) => {
        const mayAct = role.mine && !r.own && !role.met;
        const ticked = role.items.filter((i) => i.ticked_by).length;
        const reason = el("input", { type: "text", class: "reason", placeholder: "why you reject", maxlength: 300, hidden: true });
        const confirm = el("button", { type: "button", class: "reject-confirm danger", hidden: true, on: { click: (e) => {
          if (!reason.value.trim()) { say("A rejection needs a reason.", true); return; }
          act("/app/api/signoffs/roles/" + role.id + "/reject", { reason: reason.value }, e.target);
        } } }, "Reject");
        return el("div", { class: "role", data: { role: role.role, roleId: role.id } },
          el("div", {}, el("b", {}, role.role), " ",
            el("span", { class: "role-state muted" }, (role.items.length ? ticked + " of " + role.items.length + " ticked · " : "no checklist · ") +
              role.approvals.length + "/" + role.needed + " approvals" + (role.approvals.length ? " (" + role.approvals.join(", ") + ")" : "") + (role.met ? " · ✅ met" : ""))),
          el("ul", { class: "items" }, role.items.map((item) => el("li", {},
            el("label", {},
              el("input", { type: "checkbox", class: "item", data: { item: item.id }, checked: !!item.ticked_by, disabled: !mayAct,
                on: { change: (e) => act("/app/api/signoffs/items/" + item.id, { ticked: e.target.checked }, e.target) } }),
              " " + item.text + (item.required ? "" : " (optional)"),
              item.ticked_by ? el("span", { class: "muted" }, " — " + item.ticked_by) : null,
              item.evidence ? el("span", { class: "muted" }, " · 📎 " + item.evidence) : null)))),
          mayAct ? el("div", { class: "actions" },
            el("button", { type: "button", class: "approve", data: { roleId: role.id },
              on: { click: (e) => act("/app/api/signoffs/roles/" + role.id + "/approve", {}, e.target) } }, "✅ Approve as " + role.role),
            el("button", { type: "button", class: "reject", data: { roleId: role.id },
              on: { click: () => { reason.hidden = false; confirm.hidden = false; reason.focus(); } } }, "✖ Reject"),
            reason, confirm) : null);
      }),
      el("p", { class: "muted small" }, "Evidence is attached in the chat, as a reply to the sign-off message."));
  });
  replace("signoffs", nodes.length ? nodes : el("p", { class: "muted" }, "Nothing waits for a sign-off."));
}

function renderAlerts(state) {
  const nodes = state.alerts.map((g) => el("section", { class: "alert-group sev-" + g.severity, data: { group: g.id } },
    el("div", { class: "title" }, el("span", { class: "severity" }, g.severity), " ",
      el("b", {}, g.alerts.map((a) => a.name).filter((v, i, all) => all.indexOf(v) === i).join(", ")),
      g.labels.service ? " · " + g.labels.service : "",
      el("span", { class: "muted" }, " · since " + ago(g.firing_since))),
    el("ul", {}, g.alerts.slice(0, 5).map((a) => el("li", {}, a.summary || a.name))),
    g.alerts.length > 5 ? el("p", { class: "muted" }, "and " + (g.alerts.length - 5) + " more") : null,
    el("div", { class: "actions" },
      el("span", { class: "acked" + (g.acked_by ? " ok" : "") }, g.acked_by ? "acked by " + g.acked_by : "not acked"),
      !g.acked_by && state.may.ack ? el("button", { type: "button", class: "ack", data: { group: g.id },
        on: { click: (e) => act("/app/api/alerts/" + g.id + "/ack", {}, e.target) } }, "👀 Ack") : null)));
  replace("alerts", nodes.length ? nodes : el("p", { class: "muted" }, "Nothing is firing."));
}

function renderServices(state) {
  rows("services", state.services.map((p) => {
    const unhealthy = p.hosts.filter((h) => h.error || !h.running || (h.health && !h.health.ok));
    const health = unhealthy.length === 0 ? "healthy"
      : unhealthy.map((h) => h.host + ": " + (h.error || (h.health && h.health.reason) || h.state)).join("; ");
    const versions = [...new Set(p.hosts.map((h) => h.version || "–"))];
    return el("tr", { class: "service", data: { service: p.service, environment: p.environment } },
      el("td", {}, el("b", {}, p.service)), el("td", {}, p.environment),
      el("td", { class: "version" }, p.version || versions.join(" / ")),
      el("td", { class: "health " + (unhealthy.length ? "bad" : "ok") }, health),
      el("td", { class: "hosts" }, p.healthy + "/" + p.hosts.length + " healthy"));
  }), "No services in the ops file.");
}

function renderFlags(state) {
  rows("flags", state.flags.map((f) => el("tr", { class: "flag", data: { flag: f.key } },
    el("td", {}, el("b", {}, f.key), f.description ? el("div", { class: "muted small" }, f.description) : null),
    el("td", {}, f.killed ? "killed" : f.enabled ? "on" : "off"),
    el("td", {}, Object.keys(f.split).length
      ? Object.entries(f.split).map(([name, weight]) => name + " " + weight).join(" · ")
      : f.rollout_percent + "%"),
    el("td", {}, f.plan ? f.plan.steps.map((s, i) => (i === f.plan.index ? "[" + s + "%]" : s + "%")).join(" → ") + " · " + f.plan.state : "–"))),
  "No flags.");
}

function renderHistory(state) {
  rows("history", state.history.map((d) => el("tr", { class: "deployment", data: { id: d.id, state: d.state } },
    el("td", {}, "#" + d.id),
    el("td", {}, (d.kind === "deploy" ? "" : d.kind + " ") + d.service + " ", el("code", {}, d.version), " → " + d.environment),
    el("td", { class: "state-" + d.state }, d.state.replace(/_/g, " ")),
    el("td", {}, d.requested_by),
    el("td", { title: d.created_at }, ago(d.created_at)))), "No deployments match.");
  const form = document.getElementById("history-filter");
  for (const [name, values] of [["service", state.filters.services], ["environment", state.filters.environments]]) {
    const select = form.elements[name];
    if (select.options.length === 1) for (const v of values) select.append(el("option", {}, v));
  }
}

function renderDora(state) {
  const dora = state.dora;
  const all = dora.figures.find((f) => f.service === "all");
  const mark = (ok) => (ok === null || ok === undefined ? "" : ok ? " ✅" : " ⚠️");
  const figures = all ? el("dl", { class: "figures" },
    el("dt", {}, "deploys"), el("dd", {}, all.deploys + " (" + all.deployments_per_day + "/day)"),
    el("dt", {}, "change failure rate"), el("dd", {}, percent(all.change_failure_rate) + mark(all.targets.change_failure_rate) + " (target < 5%)"),
    el("dt", {}, "time to restore"), el("dd", {}, duration(all.time_to_restore_s) + mark(all.targets.time_to_restore_s) + " (target < 5 min)"),
    el("dt", {}, "lead time"), el("dd", {}, duration(all.lead_time_s) + mark(all.targets.lead_time_s) + " (target < 2 h)")) : null;
  replace("dora", figures, chart(dora.days));
}

function chart(days) {
  // Stacked bars per day: succeeded, failed (rolled back), rollbacks. Inline SVG, no library.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = 320, height = 120, pad = 18;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "deploys per day, last " + days.length + " days");
  const most = Math.max(1, ...days.map((d) => d.succeeded + d.failed + d.rolled_back));
  const step = (width - pad) / Math.max(1, days.length);
  days.forEach((d, i) => {
    let y = height - pad;
    for (const [count, cls] of [[d.succeeded, "ok"], [d.failed, "bad"], [d.rolled_back, "warn"]]) {
      if (!count) continue;
      const h = (count / most) * (height - 2 * pad);
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(pad + i * step + 1));
      bar.setAttribute("y", String(y - h));
      bar.setAttribute("width", String(Math.max(1, step - 2)));
      bar.setAttribute("height", String(h));
      bar.setAttribute("class", cls);
      const title = document.createElementNS(ns, "title");
      title.textContent = d.day + ": " + count + " " + (cls === "ok" ? "succeeded" : cls === "bad" ? "failed" : "rollbacks");
      bar.append(title);
      svg.append(bar);
      y -= h;
    }
    if (i === 0 || i === days.length - 1) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(pad + i * step + (i === 0 ? 0 : step)));
      label.setAttribute("y", String(height - 4));
      label.setAttribute("text-anchor", i === 0 ? "start" : "end");
      label.textContent = d.day.slice(5);
      svg.append(label);
    }
  });
  const most_label = document.createElementNS(ns, "text");
  most_label.setAttribute("x", "0");
  most_label.setAttribute("y", String(pad));
  most_label.textContent = String(most);
  svg.append(most_label);
  return el("figure", {}, svg, el("figcaption", { class: "muted small" }, "Deploys per day: ", el("span", { class: "key ok" }, "succeeded"), " ",
    el("span", { class: "key bad" }, "failed"), " ", el("span", { class: "key warn" }, "rollbacks")));
}

function render(state) {
  renderDeploys(state);
  renderSignoffs(state);
  renderAlerts(state);
  renderServices(state);
  renderFlags(state);
  renderHistory(state);
  renderDora(state);
  if (!document.body.dataset.rendered) {
    document.body.dataset.rendered = "1";
    performance.mark("opsgate-rendered");
  }
}

async function start() {
  applyTelegramTheme();
  document.getElementById("logout").addEventListener("click", async () => {
    await call("POST", "/app/auth/logout", {});
    location.replace("/app/");
  });
  document.getElementById("history-filter").addEventListener("change", (e) => {
    filters = new URLSearchParams(new FormData(e.currentTarget));
    for (const [key, value] of [...filters]) if (!value) filters.delete(key);
    etag = "";
    poll();
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  if (window.Telegram && window.Telegram.WebApp) window.Telegram.WebApp.ready();
  if (await signIn()) await poll();
}

start();

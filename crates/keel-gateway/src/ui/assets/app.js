// keel's dashboard: live from one event stream (/keel/ui/events), sessions read on demand.
"use strict";

const HISTORY = 600; // seconds of rates kept in this tab
const history = []; // [{t, totals}]
const RATES = [
  ["requests", "requests / s"],
  ["errors", "5xx answers / s"],
  ["fallbacks", "fallbacks / s"],
  ["retries", "retry rounds / s"],
  ["continuations", "streams continued / s"],
  ["shed", "shed by queues / s"],
  ["rate_limited", "rate-limited / s"],
];

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function badge(state) {
  return el("span", { class: "badge " + state }, state.replace("_", "-"));
}

function duration(seconds) {
  if (seconds < 60) return Math.round(seconds) + " s";
  if (seconds < 3600) return Math.round(seconds / 60) + " min";
  if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " days";
}

function when(value) {
  if (!value) return "";
  const date = typeof value === "number" ? new Date(value) : new Date(value);
  return isNaN(date) ? String(value) : date.toLocaleString();
}

function failure(last) {
  if (!last) return "";
  return `${last.class || ""} ${last.detail || ""} ${last.at ? "(" + when(last.at) + ")" : ""}`.trim();
}

function fill(table, rows) {
  const body = $(table + " tbody");
  body.replaceChildren(...rows);
}

function render(snapshot) {
  $("#version").textContent = "v" + snapshot.version;
  $("#uptime").textContent = "up " + duration(snapshot.uptime_seconds);
  const problems = [];

  fill("#upstreams", snapshot.upstreams.map((u) => {
    const breaker = u.breaker.state;
    if (u.state === "down" || breaker === "open") problems.push(`model server ${u.name} (${u.url}) is ${u.state === "down" ? "down" : "refused: its breaker is open"}`);
    return el("tr", { "data-upstream": u.name },
      el("td", {}, u.name), el("td", {}, u.url), el("td", {}, badge(u.state)),
      el("td", {}, badge(breaker)), el("td", {}, failure(u.last_error)));
  }));

  fill("#targets", snapshot.targets.map((t) => {
    if (t.breaker === "open") problems.push(`${t.name}: breaker open — ${t.open_reason || "see keel status"}`);
    return el("tr", { "data-target": t.name, "data-breaker": t.breaker },
      el("td", {}, t.name), el("td", {}, badge(t.breaker)), el("td", {}, t.open_reason || ""),
      el("td", { class: "num" }, String(t.requests)), el("td", { class: "num" }, String(t.failures)),
      el("td", {}, failure(t.last_failure)));
  }));

  renderIncidents(snapshot.incidents || { enabled: false, open: [] }, problems);

  const structured = (snapshot.totals && snapshot.totals.structured) || {};
  fill("#structured", ["valid", "repaired", "reasked", "fallback", "canned", "failed"].map((outcome) =>
    el("tr", {}, el("td", {}, outcome), el("td", { class: "num" }, String(Math.round(structured[outcome] || 0))))));

  const list = $("#problem-list");
  list.replaceChildren(...problems.map((p) => el("li", {}, p)));
  $("#problems").hidden = problems.length === 0;

  history.push({ t: Date.now() / 1000, totals: snapshot.totals || {} });
  while (history.length > 1 && history[history.length - 1].t - history[0].t > HISTORY) history.shift();
  renderRates();
}

function renderIncidents(incidents, problems) {
  const open = incidents.open || [];
  $("#incidents").hidden = open.length === 0;
  $("#incidents-note").textContent = !incidents.enabled
    ? "Incidents are off in this keel (no store, or [incidents] enabled = false)."
    : open.length ? "Click an incident to read its runbook." : "No incident is open.";
  for (const incident of open) problems.push(`incident ${incident.status}: ${incident.title}`);
  fill("#incidents", open.map((incident) => {
    const row = el("tr", { "data-incident": incident.id, "data-status": incident.status },
      el("td", {}, incident.id), el("td", {}, incident.kind), el("td", {}, badge(incident.status)),
      el("td", {}, when(incident.opened_at)), el("td", {}, incident.title));
    row.addEventListener("click", () => openRunbook(incident.id));
    return row;
  }));
}

async function openRunbook(id, tries = 15) {
  const box = $("#runbook");
  box.hidden = false;
  box.dataset.incident = id;
  box.textContent = "Loading the runbook…";
  try {
    // The runbook is written a moment after the incident opens: wait for it without a 404.
    const shown = await getJson(`/keel/incidents/${encodeURIComponent(id)}`);
    if (!shown.runbook) {
      box.textContent = "The runbook is being written…";
      if (tries > 0) setTimeout(() => { if (box.dataset.incident === id) openRunbook(id, tries - 1); }, 1000);
      return;
    }
    const response = await fetch(shown.runbook.url, { credentials: "same-origin" });
    box.replaceChildren(...markdown(await response.text()));
  } catch (error) {
    box.textContent = "The runbook cannot be read: " + error.message;
  }
}

// The runbook's Markdown as page elements: headings, paragraphs, lists, code blocks, tables,
// **bold** and `code`. Built with DOM nodes, never innerHTML: the text stays text.
function markdown(text) {
  const blocks = [];
  const lines = text.split("\n");
  const inline = (line) => {
    const parts = [];
    const pattern = /(\*\*[^*]+\*\*|`[^`]+`)/g;
    let last = 0;
    for (const match of line.matchAll(pattern)) {
      parts.push(line.slice(last, match.index));
      const token = match[0];
      parts.push(token.startsWith("**") ? el("strong", {}, token.slice(2, -2)) : el("code", {}, token.slice(1, -1)));
      last = match.index + token.length;
    }
    parts.push(line.slice(last));
    return parts;
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const trimmed = line.trim();
    if (trimmed.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith("```"); i++) code.push(lines[i].replace(/^ {0,3}/, ""));
      blocks.push(el("pre", {}, el("code", {}, code.join("\n"))));
      i++;
    } else if (/^#{1,4} /.test(trimmed)) {
      const level = trimmed.indexOf(" ");
      blocks.push(el("h" + Math.min(level + 2, 6), {}, ...inline(trimmed.slice(level + 1))));
      i++;
    } else if (/^(- |\d+\. )/.test(trimmed)) {
      const ordered = /^\d/.test(trimmed);
      const list = el(ordered ? "ol" : "ul", {});
      while (i < lines.length && /^(- |\d+\. )/.test(lines[i].trim())) {
        const item = el("li", {}, ...inline(lines[i].trim().replace(/^(- |\d+\. )/, "")));
        // What belongs to the item (a code block indented under a step) follows it.
        for (i++; i < lines.length && /^ {2,}\S/.test(lines[i]) && !lines[i].trim().startsWith("```"); i++) item.append(" ", ...inline(lines[i].trim()));
        while (i < lines.length && lines[i].trim() === "" && i + 1 < lines.length && lines[i + 1].trim().startsWith("```")) {
          const code = [];
          for (i += 2; i < lines.length && !lines[i].trim().startsWith("```"); i++) code.push(lines[i].trim());
          item.append(el("pre", {}, el("code", {}, code.join("\n"))));
          i++;
        }
        list.append(item);
        while (i < lines.length && lines[i].trim() === "" && i + 1 < lines.length && /^(- |\d+\. )/.test(lines[i + 1].trim())) i++;
      }
      blocks.push(list);
    } else if (trimmed.startsWith("|")) {
      const table = el("table", {});
      for (; i < lines.length && lines[i].trim().startsWith("|"); i++) {
        if (/^\|[-| ]+\|$/.test(lines[i].trim())) continue;
        const cells = lines[i].trim().slice(1, -1).split(" | ");
        table.append(el("tr", {}, ...cells.map((cell) => el("td", {}, ...inline(cell.trim())))));
      }
      blocks.push(table);
    } else if (trimmed === "") {
      i++;
    } else {
      const paragraph = [];
      for (; i < lines.length && lines[i].trim() !== "" && !/^(#|- |\d+\. |\||```)/.test(lines[i].trim()); i++) paragraph.push(lines[i].trim());
      if (paragraph.length === 0) { blocks.push(el("p", {}, ...inline(trimmed))); i++; continue; }
      blocks.push(el("p", {}, ...inline(paragraph.join(" "))));
    }
  }
  return blocks;
}

function sparkline(points) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 28");
  svg.setAttribute("preserveAspectRatio", "none");
  if (points.length > 1) {
    const max = Math.max(...points, 1e-9);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.map((v, i) => `${(i / (points.length - 1)) * 100},${27 - (v / max) * 26}`).join(" "));
    svg.append(line);
  }
  return svg;
}

function renderRates() {
  const cards = RATES.map(([key, label]) => {
    const rates = [];
    for (let i = 1; i < history.length; i++) {
      const dt = history[i].t - history[i - 1].t;
      const dv = (history[i].totals[key] || 0) - (history[i - 1].totals[key] || 0);
      rates.push(dt > 0 ? Math.max(0, dv / dt) : 0);
    }
    const now = rates.length ? rates[rates.length - 1] : 0;
    return el("div", { class: "rate", "data-rate": key },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, now.toFixed(now < 10 ? 2 : 0)),
      sparkline(rates));
  });
  $("#rates").replaceChildren(...cards);
}

// The per-minute samples of the last hours, from the store: totals turned into rates.
async function loadTimeline() {
  const note = $("#timeline-note");
  try {
    const body = await getJson("/keel/ui/timeline?hours=6");
    const minutes = body.minutes || [];
    if (minutes.length < 2) {
      note.textContent = body.note || "The timeline fills in a minute at a time (one sample a minute is kept for 48 hours).";
      $("#timeline").replaceChildren();
      return;
    }
    note.textContent = `${minutes.length} minutes, ${when(minutes[0].minute * 60000)} to ${when(minutes[minutes.length - 1].minute * 60000)}`;
    $("#timeline").replaceChildren(...RATES.map(([key, label]) => {
      const rates = [];
      for (let i = 1; i < minutes.length; i++) {
        const dt = (minutes[i].minute - minutes[i - 1].minute) * 60;
        const dv = (minutes[i].sample[key] || 0) - (minutes[i - 1].sample[key] || 0);
        // A restart resets the counters: a drop is no negative rate.
        rates.push(dt > 0 && dv >= 0 ? dv / dt : 0);
      }
      const peak = Math.max(...rates, 0);
      return el("div", { class: "rate", "data-timeline": key },
        el("div", { class: "label" }, label),
        el("div", { class: "value" }, "peak " + peak.toFixed(peak < 10 ? 2 : 0)),
        sparkline(rates));
    }));
  } catch (error) {
    note.textContent = "The timeline cannot be read: " + error.message;
  }
}

function breakerEvent(event) {
  const item = el("li", { "data-target": event.target },
    `${when(event.at)} — ${event.target}: ${event.from} → `, badge(event.to), ` (${event.reason}${event.why ? "; " + event.why : ""})`);
  $("#events").prepend(item);
  while ($("#events").children.length > 100) $("#events").lastChild.remove();
  // Show the new state at once, before the next snapshot.
  const row = document.querySelector(`#targets tr[data-target="${CSS.escape(event.target)}"]`);
  if (row) {
    row.dataset.breaker = event.to;
    row.children[1].replaceChildren(badge(event.to));
  }
}

function connect() {
  const live = $("#live");
  const source = new EventSource("/keel/ui/events");
  source.addEventListener("open", () => { live.className = "badge live"; live.textContent = "live"; });
  source.addEventListener("snapshot", (message) => {
    if (message.data) render(JSON.parse(message.data));
  });
  source.addEventListener("breaker", (message) => breakerEvent(JSON.parse(message.data)));
  // EventSource reconnects by itself; say so meanwhile.
  source.addEventListener("error", () => { live.className = "badge offline"; live.textContent = "reconnecting…"; });
}

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error && (body.error.message || body.error) || response.statusText);
  return body;
}

async function searchSessions(form) {
  const note = $("#session-note");
  const query = new URLSearchParams({ limit: "50" });
  let wanted = "";
  for (const [key, value] of new FormData(form)) {
    if (key === "id") wanted = value.trim();
    else if (value) query.set(key, value);
  }
  if (wanted) {
    // One session by its id: its transcript at once.
    fill("#sessions", []);
    note.textContent = "";
    return openTranscript(wanted, null);
  }
  try {
    const page = await getJson("/keel/sessions?" + query);
    note.textContent = page.sessions.length ? "" : "No session matches.";
    fill("#sessions", page.sessions.map((s) => {
      const row = el("tr", { "data-session": s.id },
        el("td", {}, s.id), el("td", {}, s.owner || ""), el("td", {}, s.model || ""), el("td", {}, s.status),
        el("td", { class: "num" }, String(s.message_count)), el("td", {}, when(s.updated_at)));
      row.addEventListener("click", () => openTranscript(s.id, row));
      return row;
    }));
  } catch (error) {
    note.textContent = "Sessions cannot be read: " + error.message;
  }
}

async function openTranscript(id, row) {
  for (const picked of document.querySelectorAll("#sessions tr.picked")) picked.classList.remove("picked");
  if (row) row.classList.add("picked");
  const box = $("#transcript");
  box.replaceChildren(el("p", { class: "note" }, "Loading…"));
  try {
    const body = await getJson(`/keel/sessions/${encodeURIComponent(id)}/messages?limit=500`);
    box.replaceChildren(el("h3", {}, id), ...body.messages.map((m) =>
      el("div", { class: "message", "data-seq": m.seq }, el("span", { class: "role" }, m.role), m.content)));
  } catch (error) {
    box.replaceChildren(el("p", { class: "note" }, "The transcript cannot be read: " + error.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  connect();
  loadTimeline();
  setInterval(loadTimeline, 60000);
  const form = $("#session-search");
  form.addEventListener("submit", (event) => { event.preventDefault(); searchSessions(form); });
  searchSessions(form);
});

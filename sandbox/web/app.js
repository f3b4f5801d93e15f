// The sandbox page: a small Slack client for the embedded Slack server, using only the sandbox's API
// (GET /api/channels, /api/events; POST /api/messages, /api/commands, /api/faults/<name>).
"use strict";

const state = {
  people: [], channels: [], bot: null, faults: [],
  me: null,              // the person posting now
  current: null,         // the channel shown
  thread: null,          // the ts of the open thread
  messages: new Map(),   // "channel ts" -> message view
  ephemerals: [],        // {user, channel, text}
  statuses: new Map(),   // "channel thread_ts" -> the bot's status line there ("is looking at it…")
  pending: [],           // files attached to the next message
};

const $ = (id) => document.getElementById(id);

// API ---------------------------------------------------------------------------------------------
async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `The sandbox answered HTTP ${response.status}.`);
  return body;
}

const postJson = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// text --------------------------------------------------------------------------------------------
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function nameOf(userId) {
  if (state.bot && userId === state.bot.id) return state.bot.name;
  const person = state.people.find((p) => p.id === userId);
  return person ? person.name : userId;
}

// The emoji the bot uses (Slack shows ":name:" as a picture).
const EMOJI = { warning: "⚠️", eyes: "👀", white_check_mark: "✅", x: "❌", hourglass_flowing_sand: "⏳", stop_sign: "🛑" };
const emoji = (name) => EMOJI[name] || `:${name}:`;

// Slack's mrkdwn, the parts the bot uses: mentions, emoji, ```blocks```, `code`, *bold*, _italic_.
function renderText(text) {
  let html = escapeHtml(text).replace(/:([a-z0-9_+-]+):/g, (match, name) => EMOJI[name] || match).replace(/&lt;@([UW][A-Z0-9]+)(?:\|[^&]*)?&gt;/g, (_, id) => `<b class="mention">@${escapeHtml(nameOf(id))}</b>`);
  html = html.replace(/```\n?([\s\S]*?)```/g, "<pre>$1</pre>");
  html = html.replace(/`([^`\n]+)`/g, "<code>$1</code>");
  html = html.replace(/(^|\s)\*([^*\n]+)\*/g, "$1<b>$2</b>").replace(/(^|\s)_([^_\n]+)_/g, "$1<i>$2</i>");
  return html.replace(/\n/g, "<br>");
}

// rendering ---------------------------------------------------------------------------------------
const key = (channel, ts) => `${channel} ${ts}`;
const isRoot = (m) => !m.thread_ts || m.thread_ts === m.ts;
const byTs = (a, b) => parseFloat(a.ts) - parseFloat(b.ts);

function channelMessages(channel) {
  return [...state.messages.values()].filter((m) => m.channel === channel).sort(byTs);
}

function messageElement(m, { inThread = false } = {}) {
  const li = document.createElement("li");
  li.className = "message" + (m.bot ? " bot" : "");
  li.dataset.ts = m.ts;
  const edited = m.edits ? ' <span class="edited">(edited)</span>' : "";
  let html = `<div class="meta"><b>${escapeHtml(nameOf(m.user))}</b>${m.bot ? ' <span class="app">APP</span>' : ""}`
    + `${edited}</div><div class="text">${renderText(m.text)}${m.streaming ? '<span class="cursor">▍</span>' : ""}</div>`;
  for (const file of m.files) html += fileHtml(file);
  if (m.reactions.length) {
    html += `<div class="reactions">${m.reactions.map((r) => `<span class="reaction" data-name="${escapeHtml(r)}" title=":${escapeHtml(r)}:">${escapeHtml(emoji(r))} 1</span>`).join("")}</div>`;
  }
  li.innerHTML = html;
  if (m.buttons.length) li.appendChild(buttonsElement(m.buttons, { channel: m.channel, ts: m.ts }));
  if (!inThread && isRoot(m)) {
    const replies = channelMessages(m.channel).filter((r) => r.thread_ts === m.ts && r.ts !== m.ts);
    if (replies.length) {
      const link = document.createElement("button");
      link.type = "button";
      link.className = "replies";
      link.textContent = `${replies.length} ${replies.length === 1 ? "reply" : "replies"}`;
      link.addEventListener("click", () => openThread(m.ts));
      li.appendChild(link);
    }
    const status = statusElement(m.channel, m.ts);
    if (status) li.appendChild(status);
  }
  return li;
}

// The buttons of a message ({channel, ts}) or of an ephemeral one ({channel, ephemeral: true}).
function buttonsElement(buttons, where) {
  const row = document.createElement("div");
  row.className = "buttons";
  for (const b of buttons) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = b.label;
    button.title = b.title;
    button.dataset.action = b.action_id;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await postJson("/api/actions", { ...where, user: state.me, action_id: b.action_id, value: b.value, kind: b.kind });
      } catch (error) {
        button.title = error.message;
      }
    });
    row.appendChild(button);
  }
  return row;
}

function statusElement(channel, threadTs) {
  const status = state.statuses.get(key(channel, threadTs));
  if (!status) return null;
  const p = document.createElement("p");
  p.className = "status-line";
  p.textContent = `${state.bot.name} ${status}`;
  return p;
}

function fileHtml(file) {
  if (!file.url) return `<div class="file gone">${escapeHtml(file.name)}</div>`;
  if (file.mimetype.startsWith("image/")) {
    return `<a class="file" href="${file.url}" target="_blank"><img src="${file.url}" alt="${escapeHtml(file.name)}"></a>`;
  }
  return `<a class="file doc" href="${file.url}" target="_blank">📄 ${escapeHtml(file.name)}</a>`;
}

function ephemeralElement(e) {
  const li = document.createElement("li");
  li.className = "message ephemeral";
  const author = e.from_slack ? "Slackbot" : `${escapeHtml(state.bot.name)} <span class="app">APP</span>`;
  li.innerHTML = `<div class="meta"><b>${author}</b> <span class="only-you">Only visible to you</span></div>`
    + `<div class="text">${renderText(e.text || "")}</div>`;
  if (e.buttons.length) li.appendChild(buttonsElement(e.buttons, { channel: e.channel, ephemeral: true }));
  return li;
}

// What only I see here: in the channel (threadTs null) or in one thread.
function myEphemerals(threadTs) {
  return state.ephemerals.filter((e) => e.channel === state.current && e.user === state.me && (e.thread_ts || null) === threadTs);
}

function renderChannel() {
  const channel = state.channels.find((c) => c.id === state.current);
  $("channel-title").textContent = channel.direct ? `${state.bot.name} (direct message)` : `# ${channel.name}`;
  $("text").placeholder = channel.direct ? `Message ${state.bot.name}` : `Message #${channel.name} — mention @peekbot to ask`;
  const list = $("messages");
  list.replaceChildren(...channelMessages(state.current).filter(isRoot).map((m) => messageElement(m)));
  for (const e of myEphemerals(null)) list.appendChild(ephemeralElement(e));
  list.scrollTop = list.scrollHeight;
  renderThread();
}

function renderThread() {
  const panel = $("thread");
  panel.hidden = !state.thread;
  if (!state.thread) return;
  const messages = channelMessages(state.current).filter((m) => m.ts === state.thread || m.thread_ts === state.thread);
  const list = $("thread-messages");
  list.replaceChildren(...messages.map((m) => messageElement(m, { inThread: true })));
  for (const e of myEphemerals(state.thread)) list.appendChild(ephemeralElement(e));
  const status = statusElement(state.current, state.thread);
  if (status) list.appendChild(status);
  list.scrollTop = list.scrollHeight;
}

function renderSidebar() {
  const entry = (channel) => {
    const li = document.createElement("li");
    li.textContent = channel.direct ? state.bot.name : `# ${channel.name}`;
    li.className = channel.id === state.current ? "current" : "";
    li.dataset.channel = channel.id;
    li.addEventListener("click", () => showChannel(channel.id));
    return li;
  };
  $("channels").replaceChildren(...state.channels.filter((c) => !c.direct).map(entry));
  $("dms").replaceChildren(...state.channels.filter((c) => c.direct && c.member === state.me).map(entry));
}

function showChannel(id) {
  state.current = id;
  state.thread = null;
  renderSidebar();
  renderChannel();
}

function openThread(ts) {
  state.thread = ts;
  renderThread();
}

// live events -------------------------------------------------------------------------------------
let redraw = null;
function scheduleRender() {  // many edits arrive at once while an answer streams: draw once per frame
  if (redraw === null) redraw = requestAnimationFrame(() => { redraw = null; renderChannel(); });
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("message", (e) => {
    const m = JSON.parse(e.data);
    state.messages.set(key(m.channel, m.ts), m);
    if (m.channel === state.current) scheduleRender();
  });
  events.addEventListener("deleted", (e) => {
    const d = JSON.parse(e.data);
    state.messages.delete(key(d.channel, d.ts));
    if (d.channel === state.current) scheduleRender();
  });
  events.addEventListener("ephemeral", (e) => {
    const ephemeral = JSON.parse(e.data);
    state.ephemerals.push(ephemeral);
    if (ephemeral.thread_ts && ephemeral.user === state.me && ephemeral.channel === state.current) state.thread = ephemeral.thread_ts;
    scheduleRender();
  });
  events.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    state.statuses.set(key(s.channel, s.thread_ts), s.status);
    if (s.channel === state.current) scheduleRender();
  });
  events.addEventListener("socket", (e) => renderSocket(JSON.parse(e.data)));
  events.onopen = () => { $("connection").textContent = "live"; $("connection").className = "badge ok"; };
  events.onerror = () => { $("connection").textContent = "reconnecting…"; $("connection").className = "badge"; };
}

// composing ---------------------------------------------------------------------------------------
function attach(files) {
  for (const file of files) state.pending.push(file);
  $("attachments").replaceChildren(...state.pending.map((file, index) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = file.name + " ×";
    chip.title = "remove";
    chip.addEventListener("click", () => { state.pending.splice(index, 1); attach([]); });
    return chip;
  }));
}

async function send(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  $("composer-error").textContent = "";
  try {
    if (text.startsWith("/peekbot")) {
      await postJson("/api/commands", { user: state.me, channel: state.current, text });
    } else {
      const form = new FormData();
      form.append("user", state.me);
      form.append("channel", state.current);
      form.append("text", text);
      for (const file of state.pending) form.append("file", file, file.name);
      const { message } = await api("/api/messages", { method: "POST", body: form });
      state.messages.set(key(message.channel, message.ts), message);
      state.thread = message.ts;  // the bot answers in the question's thread: watch it there
    }
    $("text").value = "";
    state.pending = [];
    attach([]);
    renderChannel();
  } catch (error) {
    $("composer-error").textContent = error.message;
  }
}

async function reply(event) {
  event.preventDefault();
  const text = $("thread-text").value.trim();
  $("thread-error").textContent = "";
  const form = new FormData();
  for (const [name, value] of Object.entries({ user: state.me, channel: state.current, text, thread_ts: state.thread })) {
    form.append(name, value);
  }
  try {
    await api("/api/messages", { method: "POST", body: form });
    $("thread-text").value = "";
  } catch (error) {
    $("thread-error").textContent = error.message;
  }
}

function sendOnEnter(textarea, form) {
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
}

// operator's corner -------------------------------------------------------------------------------
const FAULT_LABELS = {
  "kill-socket": "Kill the socket", "go-silent": "Go silent (half-open)", "disconnect": "Send a disconnect",
  "redeliver": "Redeliver the last event", "rate-limit-update": "429 on chat.update",
};

function renderFaults() {
  $("faults").replaceChildren(...state.faults.map((name) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.fault = name;
    button.textContent = FAULT_LABELS[name] || name;
    button.addEventListener("click", async () => {
      try {
        $("fault-result").textContent = (await api(`/api/faults/${name}`, { method: "POST" })).done;
      } catch (error) {
        $("fault-result").textContent = error.message;
      }
    });
    return button;
  }));
}

function renderSocket(s) {
  const rows = [
    ["Connection", s.open_connections ? (s.live ? "open" : "open but silent") : "down"],
    ["Connections opened", s.connections_opened], ["Envelopes sent", s.envelopes], ["Acked", s.acked],
    ["Lost", s.lost], ["Redelivered", s.redelivered], ["429 answers", s.rate_limited_calls],
  ];
  $("socket").replaceChildren(...rows.flatMap(([name, value]) => {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = value;
    return [dt, dd];
  }));
}

function showStatus(url) {
  if (!url) { setTimeout(async () => showStatus((await api("/api/channels")).status_url), 2000); return; }
  $("status-link").href = url;
  $("status-frame").src = url;
  setInterval(() => { $("status-frame").src = url; }, 5000);  // the page itself refreshes only every 30 s
}

// start -------------------------------------------------------------------------------------------
async function start() {
  const workspace = await api("/api/channels");
  Object.assign(state, { people: workspace.people, channels: workspace.channels, bot: workspace.bot, faults: workspace.faults });
  state.me = state.people[0].id;
  $("person").replaceChildren(...state.people.map((p) => new Option(p.name, p.id)));
  $("person").addEventListener("change", (e) => { state.me = e.target.value; showChannel(state.people.find((p) => p.id === state.me).dm); });
  $("composer").addEventListener("submit", send);
  $("thread-composer").addEventListener("submit", reply);
  sendOnEnter($("text"), $("composer"));
  sendOnEnter($("thread-text"), $("thread-composer"));
  $("file-input").addEventListener("change", (e) => { attach(e.target.files); e.target.value = ""; });
  const main = $("channel");
  main.addEventListener("dragover", (e) => { e.preventDefault(); main.classList.add("dropping"); });
  main.addEventListener("dragleave", () => main.classList.remove("dropping"));
  main.addEventListener("drop", (e) => { e.preventDefault(); main.classList.remove("dropping"); attach(e.dataTransfer.files); });
  $("close-thread").addEventListener("click", () => openThread(null));
  $("toggle-operator").addEventListener("click", () => document.body.classList.toggle("no-operator"));
  renderFaults();
  showStatus(workspace.status_url);
  showChannel(state.people[0].dm);
  listen();
}

start().catch((error) => { document.body.textContent = `The sandbox page could not start: ${error.message}`; });

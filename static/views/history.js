// History: past sessions newest first (GET /api/v1/sessions, "More" follows next_cursor), and one
// session's messages oldest first (GET /api/v1/sessions/{id}/messages): who said what, and which
// replies were cut off by the person speaking over them.
import { api, el } from "/static/api.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 10;

// Seconds too: sessions started within the same minute must still be told apart.
const when = (iso) => new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// Words for a person, not the stored states' names.
const STATES = { created: "not started", connecting: "connecting", connected: "live now" };

function duration(session) {
  if (!session.connected_at || !session.ended_at) return null;  // never connected: no call to time
  const seconds = Math.max(0, Math.round((Date.parse(session.ended_at) - Date.parse(session.connected_at)) / 1000));
  return seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds} s`;
}

function sessionItem(session, onOpen) {
  const count = session.message_count ?? 0;
  const facts = [
    session.status === "ended"
      ? (session.end_reason ? `ended: ${session.end_reason.replaceAll("_", " ")}` : "ended")
      : STATES[session.status] ?? session.status,
    duration(session),
    `${count} message${count === 1 ? "" : "s"}`,
  ].filter(Boolean);
  const mic = session.usage?.mic_audio_seconds;
  if (mic) facts.push(`mic ${mic.toFixed(1)} s`);
  const button = el("button", { type: "button", className: "session", dataset: { sessionId: session.session_id } },
    el("span", { className: "session-when" }, when(session.created_at)),
    el("span", { className: "session-facts" }, facts.join(" · ")));
  button.addEventListener("click", () => onOpen(session));
  return el("li", {}, button);
}

function messageItem(message) {
  const who = message.role === "user" ? "You" : "Agent";
  const how = message.source === "voice" ? "spoken" : "typed";
  const item = el("li", { className: `message ${message.role}`, dataset: { messageId: message.message_id } },
    el("div", { className: "message-meta" }, `${who} · ${how} · ${clock(message.created_at)}`),
    el("div", { className: "message-text" }, message.content));
  if (message.interrupted) {
    item.classList.add("interrupted");
    const spoken = message.spoken_characters, generated = message.generated_characters;
    const detail = spoken != null && generated != null ? ` after ${spoken} of ${generated} characters` : "";
    item.append(el("div", { className: "interrupted-note" }, `Interrupted${detail}: the rest was never spoken`));
  }
  return item;
}

export function startHistory() {
  const ui = {
    listPane: $("history-list-pane"), list: $("history-list"), empty: $("history-empty"), more: $("history-more"),
    status: $("history-status"), detail: $("history-detail"), back: $("history-back"), title: $("history-title"),
    messages: $("history-messages"), messagesMore: $("history-messages-more"), messagesStatus: $("history-messages-status"),
  };
  let sessionsCursor = null, messagesCursor = null, openSession = null;
  let generation = 0;  // a refresh started later wins over an older answer still on its way

  function say(node, text, kind = "") { node.textContent = text; node.dataset.kind = kind; }

  async function loadSessions(reset) {
    const mine = reset ? ++generation : generation;
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (!reset && sessionsCursor) query.set("cursor", sessionsCursor);
    ui.more.disabled = true;
    say(ui.status, "Loading…");
    try {
      const page = await api("GET", `/api/v1/sessions?${query}`);
      if (mine !== generation) return;
      if (reset) ui.list.replaceChildren();
      ui.list.append(...page.sessions.map((s) => sessionItem(s, openMessages)));
      sessionsCursor = page.next_cursor;
      ui.more.hidden = !sessionsCursor;
      ui.empty.hidden = ui.list.children.length > 0;
      say(ui.status, "");
    } catch (error) {
      if (mine === generation) say(ui.status, `Could not load sessions: ${error.message}`, "error");
    } finally {
      ui.more.disabled = false;
    }
  }

  async function loadMessages(reset) {
    const session = openSession;
    const query = new URLSearchParams({ limit: "50" });
    if (!reset && messagesCursor) query.set("cursor", messagesCursor);
    ui.messagesMore.disabled = true;
    say(ui.messagesStatus, "Loading…");
    try {
      const page = await api("GET", `/api/v1/sessions/${session.session_id}/messages?${query}`);
      if (session !== openSession) return;
      if (reset) ui.messages.replaceChildren();
      ui.messages.append(...page.messages.map(messageItem));
      messagesCursor = page.next_cursor;
      ui.messagesMore.hidden = !messagesCursor;
      say(ui.messagesStatus, ui.messages.children.length ? "" : "Nothing was said in this session.");
    } catch (error) {
      if (session === openSession) say(ui.messagesStatus, `Could not load messages: ${error.message}`, "error");
    } finally {
      ui.messagesMore.disabled = false;
    }
  }

  function openMessages(session) {
    openSession = session;
    messagesCursor = null;
    ui.title.textContent = `Session of ${when(session.created_at)}`;
    ui.messages.replaceChildren();
    ui.listPane.hidden = true;
    ui.detail.hidden = false;
    loadMessages(true);
  }

  function closeMessages() {
    openSession = null;
    ui.detail.hidden = true;
    ui.listPane.hidden = false;
  }

  ui.more.addEventListener("click", () => loadSessions(false));
  ui.messagesMore.addEventListener("click", () => loadMessages(false));
  ui.back.addEventListener("click", () => { closeMessages(); loadSessions(true); });
  // Opening the tab again shows the newest sessions (or the open session's newest messages).
  return { refresh: () => (openSession ? loadMessages(true) : loadSessions(true)) };
}

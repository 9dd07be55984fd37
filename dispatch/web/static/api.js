// The apps' one client of the API: the session (a token from a sign-in link), HTTP calls that throw the one
// error shape, the server's clock, and the websocket that resumes as it connects and says how it is doing.

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details;
    this.retryAfter = error.retry_after;
  }
}

// --- the session ---------------------------------------------------------------------------------------

const TOKEN_KEY = "dispatch.token";

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

// The token comes in the fragment of a sign-in link (`dispatch token --link`): browsers never send a
// fragment to the server. It moves to session storage (this tab only) and out of the address bar at once.
export function signIn(role) {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  const who = token && claims(token);
  if (!who || who.role !== role || (who.exp && who.exp * 1000 < Date.now())) return null;
  return { token, role: who.role, subject: who.sub, expires: who.exp ? new Date(who.exp * 1000) : null };
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
}

export function fragmentParam(name) {
  return new URLSearchParams(location.hash.slice(1)).get(name);
}

// --- HTTP ----------------------------------------------------------------------------------------------

let bearer = null;

export function useToken(token) {
  bearer = token;
}

export async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch {
    throw new ApiError(0, { code: "network", message: "the server cannot be reached", details: null });
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const error = data && data.error ? data.error : { code: `http_${r.status}`, message: r.statusText };
    throw new ApiError(r.status, error);
  }
  return data;
}

// An error as a sentence: the server's message, and for validation each field's.
export function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  let text = error.message;
  if (Array.isArray(error.details) && error.details.length) {
    text += ": " + error.details.map((d) => `${(d.path || []).join(".")} ${d.message}`.trim()).join("; ");
  } else if (error.code === "too_far" && error.details) {
    text += ` (${Math.round(error.details.distance_m)} m away; within ${error.details.radius_m} m needed)`;
  }
  return text;
}

// --- the server's clock (it may run faster than wall time in a demo) ------------------------------------

export const clock = {
  base: Date.now(),
  at: performance.now(),
  speed: 1,
  async sync() {
    const sent = performance.now();
    const c = await api("GET", "/v1/clock");
    const back = performance.now();
    this.base = Date.parse(c.now) + ((back - sent) / 2) * c.speed;
    this.at = back;
    this.speed = c.speed;
  },
  now() {
    return new Date(this.base + (performance.now() - this.at) * this.speed);
  },
};

// --- the websocket -------------------------------------------------------------------------------------

const BACKOFF_S = [0.5, 1, 2, 4, 8];

// One websocket per app. It authenticates with its first message, resumes after the last seq this tab saw
// (`?after_seq=`: nothing missed, nothing twice), dedupes by seq, and reconnects with backoff, saying so.
export class Live {
  constructor({ token, subject, onEvent, onVolatile, onHello, onState }) {
    this.token = token;
    this.seqKey = `dispatch.seq.${subject}`;
    this.onEvent = onEvent || (() => {});
    this.onVolatile = onVolatile || (() => {});
    this.onHello = onHello || (() => {});
    this.onState = onState || (() => {});
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.connected = 0;
  }

  get lastSeq() {
    const v = sessionStorage.getItem(this.seqKey);
    return v === null ? null : Number(v);
  }

  set lastSeq(v) {
    sessionStorage.setItem(this.seqKey, String(v));
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  state(name, text) {
    this.current = name;
    this.onState(name, text);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const after = this.lastSeq;
    const query = after === null ? "" : `?after_seq=${after}`;
    this.state("connecting", this.attempt ? `reconnecting (attempt ${this.attempt + 1})…` : "connecting…");
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws${query}`);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", id: "auth", token: this.token }));
    ws.onmessage = (m) => this.receive(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (e.code === 1008) {
        this.state("refused", `signed out: ${e.reason || "the server refused the token"}`);
        return;
      }
      const delay = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)] * (0.8 + Math.random() * 0.4);
      this.attempt += 1;
      this.state("reconnecting", `connection lost; reconnecting in ${Math.ceil(delay)} s`);
      this.timer = setTimeout(() => this.connect(), delay * 1000);
    };
  }

  receive(msg) {
    if (msg.type === "reply") {
      if (!msg.ok && msg.id === "auth") this.state("refused", `signed out: ${msg.error.message}`);
      return;
    }
    if (msg.type === "hello") {
      const resumed = msg.after_seq !== undefined;
      if (this.lastSeq === null || msg.last_seq < this.lastSeq) this.lastSeq = msg.last_seq;
      this.attempt = 0;
      this.connected += 1;
      this.state("live", this.connected > 1 ? "live again: resumed" : "live");
      this.onHello(msg, resumed);
      return;
    }
    if (typeof msg.seq === "number") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return;
      this.lastSeq = msg.seq;
      this.onEvent(msg);
      return;
    }
    this.onVolatile(msg);
  }
}

// --- small DOM helpers (text only: data never becomes markup) -------------------------------------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

export function money(cents) {
  return (cents / 100).toFixed(2);
}

export function clockTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function shortId(id) {
  return id ? id.slice(0, id.indexOf("_") + 7) : "–";
}

export function words(state) {
  return String(state).replace(/_/g, " ");
}

export function countdown(deadlineIso) {
  const s = Math.max(0, Math.round((Date.parse(deadlineIso) - clock.now().getTime()) / 1000));
  return { seconds: s, text: `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` };
}

// A message in the page's live region (read out by screen readers), in words.
export function say(text, kind = "info") {
  const box = $("#messages");
  if (!box) return;
  const line = h("p", { class: `message ${kind}` }, text);
  box.prepend(line);
  while (box.children.length > 4) box.lastElementChild.remove();
  setTimeout(() => line.remove(), kind === "error" ? 15000 : 6000);
}

// Run an action from a button: disabled while it runs, its error said in words.
export async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    const result = await fn();
    if (what) say(what, "ok");
    return result;
  } catch (e) {
    say(describe(e), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// The page header's connection badge and sign-in line, and the sign-in prompt when there is no token.
export function showConnection(name, text) {
  const el = $("#connection");
  if (!el) return;
  el.className = `connection ${name}`;
  el.textContent = text;
}

export function requireSignIn(role, page) {
  const session = signIn(role);
  if (!session) {
    $("#app").hidden = true;
    const box = $("#signin");
    box.hidden = false;
    fill(
      box,
      h("h2", {}, "Sign in"),
      h(
        "p",
        {},
        `Open this page with a sign-in link: run `,
        h("code", {}, `dispatch token --role ${role} --subject ID --link`),
        ` and open the URL it prints (${page}#token=…).`,
      ),
    );
    return null;
  }
  useToken(session.token);
  const who = $("#who");
  if (who) {
    fill(
      who,
      `${role} ${session.subject}`,
      " ",
      h("button", { type: "button", class: "link", onclick: signOut }, "sign out"),
    );
  }
  return session;
}

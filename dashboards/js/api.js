// The server: REST reads and the live websocket (CONTRACT.md §3, §7.3, §7.6).
// Only this module talks to the network, and only to the page's own origin.

const params = new URLSearchParams(location.search);
// A token from ?token= is remembered; it is never shown or logged.
if (params.get("token")) localStorage.setItem("ioc_token", params.get("token"));
const token = () => localStorage.getItem("ioc_token");

export function setToken(t) {
  localStorage.setItem("ioc_token", t);
}

/** GET a JSON document of /api/v1; null when it fails (the board keeps what it has). */
export async function get(path, query = {}) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v != null && v !== ""));
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  try {
    const r = await fetch(`/api/v1/${path}${q.size ? "?" + q : ""}`, { headers, cache: "no-store" });
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

/**
 * The live connection. `subscription()` gives what to subscribe to, asked again on
 * every (re)connect; `onMessage(m)` gets every message; `onState(s)` gets
 * "connecting" | "live" | "offline". Reconnects with exponential back-off (1 s to
 * 30 s, with jitter); a gap in `seq` means something was missed: subscribe again,
 * which brings a fresh snapshot.
 */
export class Live {
  constructor({ subscription, onMessage, onState }) {
    Object.assign(this, { subscription, onMessage, onState });
    this.retry = 1000;
    this.seq = 0;
    this.socket = null;
    this.everOpened = false;
  }

  connect() {
    this.onState("connecting");
    this.seq = 0; // `seq` counts from 1 on each connection
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = token() ? "?token=" + encodeURIComponent(token()) : "";
    const s = new WebSocket(`${proto}//${location.host}/api/v1/ws${q}`);
    this.socket = s;
    s.onopen = () => {
      this.everOpened = true;
      this.retry = 1000;
      this.subscribe();
    };
    s.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m.seq !== this.seq + 1 && this.seq !== 0 && m.type !== "snapshot") {
        // A message was lost: start over from a snapshot.
        this.seq = m.seq;
        this.subscribe();
        return;
      }
      this.seq = m.seq;
      if (m.type === "snapshot") this.onState("live");
      this.onMessage(m);
    };
    s.onclose = () => {
      if (this.socket !== s) return;
      this.socket = null;
      this.onState("offline");
      const wait = this.retry * (0.75 + Math.random() * 0.5);
      this.retry = Math.min(this.retry * 2, 30000);
      setTimeout(() => this.connect(), wait);
    };
    s.onerror = () => {}; // onclose follows, and reconnects
  }

  /** (Re)subscribes; the answer is a snapshot. */
  subscribe() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ op: "subscribe", ...this.subscription() }));
    }
  }

  /** Drops the connection (for a new token); it reconnects at once. */
  reset() {
    this.retry = 250;
    if (this.socket) this.socket.close();
  }
}

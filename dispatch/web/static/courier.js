// The courier app: the shift, the location (the device's GPS, or a simulated source that drives the route
// for demos and tests), route offers, and the stops in order: arrived, picked up, delivered with the code.
import {
  $,
  Live,
  act,
  api,
  clock,
  clockTime,
  countdown,
  describe,
  fill,
  fragmentParam,
  h,
  requireSignIn,
  say,
  shortId,
  showConnection,
  words,
} from "./api.js";
import { MapView, bounds, metres } from "./map.js";

const OPEN = new Set(["pending", "arrived"]);
const SOURCE_KEY = "dispatch.courier.source";

const session = requireSignIn("courier", "/courier");
if (session) start(session);

function start(session) {
  const courierId = session.subject;
  let status = null;
  let me = null; // [lat, lng] last sent
  let fix = null; // the device's latest fix
  let watch = null;
  let sending = false;
  const shops = new Map();
  const map = new MapView($("#map"), { label: "your route" });
  // The simulated source: metres a second (a bicycle by default), from a starting point if given.
  const speed = Number(fragmentParam("speed") || 8);
  const startAt = (fragmentParam("at") || "").split(",").map(Number);
  let serial = Promise.resolve();
  const queue = (fn) => {
    serial = serial.then(fn).catch((e) => say(describe(e), "error"));
  };

  async function reload() {
    await clock.sync();
    status = await api("GET", `/v1/couriers/${courierId}/status`);
    $("#title").textContent = status.name;
    document.title = status.name;
    if (!me && status.position) me = [status.position.lat, status.position.lng];
    if (!map.hasFrame()) {
      const area = await api("GET", "/v1/area");
      if (area.south !== null) map.setFrame(area.south, area.west, area.north, area.east);
    }
    await names();
    render();
  }

  async function names() {
    for (const stop of stops()) {
      if (stop.shop_id && !shops.has(stop.shop_id)) {
        shops.set(stop.shop_id, (await api("GET", `/v1/shops/${stop.shop_id}`)).name);
      }
    }
  }

  function apply(event) {
    if (!status) return;
    const data = event.data;
    if (event.type.startsWith("courier.shift_")) Object.assign(status, data);
    if (event.type === "route.cancelled") {
      status.routes = status.routes.filter((r) => r.id !== data.id);
      say("A route was taken back.", "info");
    } else if (event.type === "route.offered" || event.type === "route.updated") {
      const at = status.routes.findIndex((r) => r.id === data.id);
      const live = data.state === "offered" || data.state === "active";
      if (at >= 0) {
        if (live) status.routes[at] = data;
        else status.routes.splice(at, 1);
      } else if (live) {
        status.routes.push(data);
        say(data.state === "offered" ? "A new route is offered." : "A new route.", "info");
      }
    }
    return names().then(render);
  }

  // Live routes in the order the courier runs them; their stops still to do, in order.
  function stops() {
    return status ? status.routes.flatMap((r) => r.stops.map((s) => ({ ...s, route: r }))) : [];
  }

  function openStops() {
    return stops().filter((s) => OPEN.has(s.state) && s.route.state === "active");
  }

  function place(stop) {
    return stop.kind === "pickup" ? shops.get(stop.shop_id) || shortId(stop.shop_id) : `the door of order ${shortId(stop.order_id)}`;
  }

  // --- rendering ---------------------------------------------------------------------------------------

  function render() {
    if (!status) return;
    $("#shift-state").textContent = status.on_shift ? "on shift" : "off shift";
    const shift = $("#shift");
    shift.textContent = status.on_shift ? "End shift" : "Start shift";
    shift.className = status.on_shift ? "danger" : "primary";
    renderOffer();
    renderNext();
    fill(
      $("#stops"),
      stops().map((s) =>
        h(
          "li",
          { dataset: { stop: s.id } },
          h("span", {}, s.kind === "pickup" ? "Pick up at " : "Deliver to ", place(s)),
          " ",
          h("span", { class: `state ${s.state}` }, words(s.state)),
          s.locked ? h("strong", {}, " locked: call the operator") : null,
          h("span", { class: "muted small" }, ` · ${s.items} item(s) · ETA ${clockTime(s.eta.arrival)}`),
        ),
      ),
    );
    if (!stops().length) fill($("#stops"), h("li", { class: "muted" }, "No stop: waiting for work."));
    drawMap();
  }

  function renderOffer() {
    const offered = status.routes.find((r) => r.state === "offered");
    const box = $("#offer");
    box.hidden = !offered;
    if (!offered) return;
    const left = offered.deadline_at ? countdown(offered.deadline_at) : null;
    fill(
      box,
      h("div", {}, `New route: ${offered.stops.length} stops`, left ? ` · answer within ` : "", left ? h("span", { class: "countdown", dataset: { deadline: offered.deadline_at } }, left.text) : null),
      h("div", { class: "small" }, offered.stops.map((s) => `${s.kind === "pickup" ? "pick up at" : "deliver to"} ${place(s)}`).join(" → ")),
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "primary", onclick: (e) => act(e.target, "Route accepted", () => answer(offered, "accept")) }, "Accept route"),
        h("button", { type: "button", class: "danger", onclick: (e) => act(e.target, "Route declined", () => answer(offered, "decline")) }, "Decline"),
      ),
    );
  }

  async function answer(route, verb) {
    const body = await api("POST", `/v1/routes/${route.id}/${verb}`, verb === "decline" ? {} : undefined);
    await apply({ type: "route.updated", data: body });
  }

  // The next stop is drawn again only when it changes (a ping only moves the distance), so a code being
  // typed stays.
  let shown = null;
  const typed = new Map(); // stop id -> the code typed so far
  function renderNext() {
    const next = openStops()[0];
    const box = $("#next");
    const key = next ? `${next.id}:${next.state}:${next.locked}:${next.eta.arrival}` : `none:${status.on_shift}`;
    if (key === shown) return showDistance(next);
    shown = key;
    if (!next) {
      fill(box, h("p", { class: "muted" }, status.on_shift ? "Nothing to do now." : "Start your shift to get work."));
      return;
    }
    const buttons = [];
    if (next.state === "pending") {
      buttons.push(h("button", { type: "button", id: "arrived", onclick: (e) => act(e.target, "Arrived", () => step(next, "arrived")) }, "Arrived"));
    }
    let code = null;
    if (next.kind === "pickup") {
      buttons.push(h("button", { type: "button", class: "primary", id: "complete", onclick: (e) => act(e.target, "Picked up", () => step(next, "completed")) }, "Picked up"));
    } else {
      code = h("input", {
        id: "code",
        inputmode: "numeric",
        maxlength: "8",
        size: "6",
        "aria-label": "the resident's code",
        placeholder: "code",
        value: typed.get(next.id) || "",
        oninput: (e) => typed.set(next.id, e.target.value),
      });
      buttons.push(
        h("label", {}, "Code", code),
        h("button", { type: "button", class: "primary", id: "complete", onclick: (e) => act(e.target, "Delivered", () => step(next, "completed", code.value.trim())) }, "Delivered"),
      );
    }
    fill(
      box,
      h("h3", {}, next.kind === "pickup" ? "Next: pick up at " : "Next: deliver to ", place(next)),
      h(
        "p",
        { class: "small" },
        `${next.items} item(s) · ETA ${clockTime(next.eta.arrival)} · `,
        h("span", { id: "distance" }),
        next.state === "arrived" ? " · arrived" : "",
      ),
      next.locked ? h("p", { class: "alert" }, "Locked after wrong codes: the operator can unlock it.") : null,
      h("div", { class: "row" }, buttons),
    );
    showDistance(next);
  }

  function showDistance(next) {
    const el = $("#distance");
    if (!el || !next) return;
    const away = me ? Math.round(metres(me, [next.location.lat, next.location.lng])) : null;
    el.dataset.metres = away === null ? "" : String(away);
    el.textContent = away === null ? "distance unknown (no position)" : `${away} m away`;
  }

  async function step(stop, what, code) {
    if (what === "completed" && stop.kind === "dropoff" && !code) throw new Error("Type the code the resident gives you.");
    const body = what === "completed" && stop.kind === "dropoff" ? { code } : what === "completed" ? {} : undefined;
    const route = await api("POST", `/v1/stops/${stop.id}/${what}`, body);
    await apply({ type: "route.updated", data: route });
  }

  function drawMap() {
    const todo = openStops();
    if (!map.hasFrame()) {
      const box = bounds([me, ...todo.map((s) => [s.location.lat, s.location.lng])]);
      if (box) map.setFrame(...box);
    }
    map.draw("routes", (add) => {
      const path = [me, ...todo.map((s) => [s.location.lat, s.location.lng])].filter(Boolean);
      if (path.length > 1) add(map.line(path, "", "your way to the next stops"));
    });
    map.draw("orders", (add) => {
      stops().forEach((s, i) => {
        const done = !OPEN.has(s.state);
        add(
          map.marker(s.location.lat, s.location.lng, {
            shape: "diamond",
            cls: `stop${done ? " done" : ""}`,
            label: String(i + 1),
            title: `${i + 1}: ${s.kind === "pickup" ? "pick up at" : "deliver to"} ${place(s)} (${words(s.state)})`,
          }),
        );
      });
    });
    map.draw("me", (add) => {
      if (me) add(map.marker(me[0], me[1], { cls: "me", size: 7, title: "you" }));
    });
  }

  // --- location ----------------------------------------------------------------------------------------

  async function send() {
    if (sending || !status || !status.on_shift) return;
    const source = $("#source").value;
    let point = null;
    let accuracy = 5;
    if (source === "gps" && fix) {
      point = [fix.coords.latitude, fix.coords.longitude];
      accuracy = Math.min(fix.coords.accuracy, 10000);
    } else if (source === "sim") {
      point = simulate();
    }
    if (!point) return;
    sending = true;
    try {
      const at = clock.now().toISOString();
      const r = await api("POST", `/v1/couriers/${courierId}/location`, { lat: point[0], lng: point[1], accuracy, at });
      me = point;
      $("#position").textContent = `sent ${point[0].toFixed(5)}, ${point[1].toFixed(5)} ±${Math.round(accuracy)} m at ${clockTime(at)}${r.flagged ? " (flagged: a jump too fast to trust)" : ""}`;
      renderNext();
      drawMap();
    } catch (e) {
      $("#position").textContent = `not sent: ${describe(e)}`;
    } finally {
      sending = false;
    }
  }

  // One second of travel toward the next stop at `speed`.
  function simulate() {
    if (!me) {
      if (startAt.length === 2 && startAt.every(Number.isFinite)) me = startAt;
      else if (map.hasFrame()) me = map.unproject(map.frame[0] + map.frame[2] / 2, map.frame[1] + map.frame[3] / 2);
      else return null;
    }
    const next = openStops()[0];
    if (!next) return me;
    const target = [next.location.lat, next.location.lng];
    const d = metres(me, target);
    if (d <= speed) return target;
    const f = speed / d;
    return [me[0] + (target[0] - me[0]) * f, me[1] + (target[1] - me[1]) * f];
  }

  function useSource(source) {
    sessionStorage.setItem(SOURCE_KEY, source);
    if (watch !== null) navigator.geolocation.clearWatch(watch);
    watch = null;
    fix = null;
    if (source === "gps") {
      if (!navigator.geolocation) {
        say("This browser has no location service: use the simulated source.", "error");
        return;
      }
      watch = navigator.geolocation.watchPosition(
        (p) => (fix = p),
        (e) => say(`Location unavailable: ${e.message}`, "error"),
        { enableHighAccuracy: true, maximumAge: 1000 },
      );
    }
  }

  const source = $("#source");
  source.value = fragmentParam("source") || sessionStorage.getItem(SOURCE_KEY) || "off";
  useSource(source.value);
  source.addEventListener("change", () => useSource(source.value));

  $("#shift").addEventListener("click", (e) =>
    act(e.target, null, async () => {
      const verb = status.on_shift ? "end" : "start";
      Object.assign(status, await api("POST", `/v1/couriers/${courierId}/shift/${verb}`));
      say(status.on_shift ? "On shift" : "Off shift", "ok");
      render();
    }),
  );

  setInterval(() => {
    send();
    for (const el of document.querySelectorAll(".countdown[data-deadline]")) el.textContent = countdown(el.dataset.deadline).text;
  }, 1000);

  new Live({
    token: session.token,
    subject: courierId,
    onState: showConnection,
    onHello: () => queue(reload),
    onEvent: (event) => queue(() => apply(event)),
  }).start();
}

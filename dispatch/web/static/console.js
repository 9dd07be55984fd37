// The operator console: the live map (zones and cells, shops, couriers moving, doors by state, routes), the
// orders with filters and each one's timeline, the fleet, the dispatch rounds, the headline figures, and
// the actions a dispatcher takes: cancel an order, give a job or a route to another courier, unlock a stop,
// record a step for a courier, start or end a shift.
//
// What it shows is read over HTTP. The websocket brings hints of what changed (`ops.changed`), which make
// it read again at once; positions are read every two seconds; after a reconnect everything is read again.
import {
  $,
  Live,
  act,
  api,
  clock,
  clockTime,
  describe,
  fill,
  h,
  money,
  requireSignIn,
  say,
  shortId,
  showConnection,
  words,
} from "./api.js";
import { MapView, bounds } from "./map.js";

const ORDER_STATES = ["placed", "accepted", "preparing", "ready", "in_delivery", "delivered", "partially_unfulfilled", "unfulfilled", "cancelled"];
const FINISHED = new Set(["delivered", "cancelled", "unfulfilled"]);
const OPEN_STOP = new Set(["pending", "arrived"]);
const POLL_MS = 2000;
const FALLBACK_MS = 15000;

const session = requireSignIn("admin", "/console");
if (session) start();

function start() {
  const shops = new Map();
  const couriers = new Map();
  const fleet = new Map();
  let routes = [];
  let openOrders = [];
  let listed = [];
  let next = null;
  let headline = null;
  let rounds = [];
  let selected = null; // order id
  let detail = null; // {order, timeline}
  let chosenCourier = null;
  let cells = null;
  const map = new MapView($("#map"), { label: "the neighbourhood" });
  let serial = Promise.resolve();
  const queue = (fn) => {
    serial = serial.then(fn).catch((e) => say(describe(e), "error"));
    return serial;
  };

  // --- reading -----------------------------------------------------------------------------------------

  async function pages(path, most = Infinity, key = "items") {
    const out = [];
    let cursor = null;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api("GET", `${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      out.push(...page[key]);
      cursor = page.next || null;
    } while (cursor && out.length < most);
    return out;
  }

  async function readShops() {
    shops.clear();
    for (let offset = 0; ; offset += 500) {
      const page = (await api("GET", `/v1/shops?limit=500&offset=${offset}`)).items;
      for (const s of page) shops.set(s.id, s);
      if (page.length < 500) break;
    }
    if (!map.hasFrame()) {
      const box = bounds([...shops.values()].map((s) => [s.lat, s.lng]));
      if (box) map.setFrame(...box, 1500);
    }
    const names = [...shops.values()].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    for (const select of [$("#f-shop"), $("#cells-shop")]) {
      const chosen = select.value;
      fill(select, h("option", { value: "" }, select.id === "f-shop" ? "any" : "no shop"), names.map((s) => h("option", { value: s.id }, s.name)));
      select.value = chosen;
    }
  }

  async function readCouriers() {
    couriers.clear();
    for (const c of await pages("/v1/couriers")) couriers.set(c.id, c);
    const select = $("#f-courier");
    const chosen = select.value;
    fill(select, h("option", { value: "" }, "any"), [...couriers.values()].map((c) => h("option", { value: c.id }, c.name)));
    select.value = chosen;
  }

  // Residents by name, for the filter's suggestions and the order's detail (the first thousand).
  const residents = new Map();
  async function readResidents() {
    for (const r of await pages("/v1/residents", 1000)) residents.set(r.id, r);
    fill($("#residents"), [...residents.values()].map((r) => h("option", { value: r.id }, r.name)));
  }

  async function readLive() {
    const [f, r] = await Promise.all([api("GET", "/v1/fleet"), api("GET", "/v1/routes")]);
    fleet.clear();
    for (const m of f.items) fleet.set(m.id, m);
    routes = r.items;
    $("#clock").textContent = `server time ${clockTime(clock.now().toISOString())}`;
  }

  function query() {
    const q = new URLSearchParams({ limit: "50" });
    const state = $("#f-state").value;
    if (state === "open") q.set("open", "true");
    else if (state) q.set("state", state);
    for (const [id, name] of [["#f-shop", "shop_id"], ["#f-courier", "courier_id"]]) if ($(id).value) q.set(name, $(id).value);
    const resident = $("#f-resident").value.trim();
    if (resident) q.set("resident_id", resident);
    const since = $("#f-since").value;
    if (since) q.set("since", new Date(clock.now().getTime() - Number(since) * 1000).toISOString());
    return q;
  }

  async function readOrders(more = false) {
    const q = query();
    if (more && next) q.set("cursor", next);
    const page = await api("GET", `/v1/orders?${q}`);
    listed = more ? [...listed, ...page.items] : page.items;
    next = page.next || null;
  }

  async function readSummary() {
    const [o, hl, rd] = await Promise.all([
      api("GET", "/v1/orders?open=true&limit=200"),
      api("GET", "/v1/headline"),
      api("GET", `/v1/rounds?limit=30&busy=${$("#busy-rounds").checked}`),
    ]);
    openOrders = o.items;
    headline = hl;
    rounds = rd.items;
  }

  async function readDetail() {
    if (!selected) return;
    const [order, timeline] = await Promise.all([api("GET", `/v1/orders/${selected}`), api("GET", `/v1/orders/${selected}/timeline`)]);
    detail = { order, timeline: timeline.events };
  }

  async function readAll() {
    await clock.sync();
    await readShops();
    await Promise.all([readCouriers(), readResidents(), readLive(), readOrders(), readSummary(), readDetail()]);
    renderAll();
  }

  // A hint says what changed: read the summaries (and the courier list when shifts changed) again.
  let hinted = null;
  let hintCouriers = false;
  function onHint(msg) {
    if (msg.type !== "ops.changed") return;
    hintCouriers ||= msg.data.couriers.length > 0;
    if (hinted) return;
    hinted = setTimeout(() => {
      hinted = null;
      const withCouriers = hintCouriers;
      hintCouriers = false;
      queue(async () => {
        await Promise.all([readSummary(), readOrders(), readDetail(), readLive(), withCouriers ? readCouriers() : null]);
        renderAll();
      });
    }, 300);
  }

  // --- rendering ---------------------------------------------------------------------------------------

  function renderAll() {
    renderCards();
    renderOrders();
    renderFleet();
    renderRounds();
    renderDetail();
    drawMap();
  }

  function card(title, figure, note) {
    return h("div", { class: "card" }, h("div", { class: "muted small" }, title), h("div", { class: "figure" }, figure), note ? h("div", { class: "small muted" }, note) : null);
  }

  function renderCards() {
    if (!headline) return;
    const hl = headline;
    const onShift = [...fleet.values()];
    fill(
      $("#cards"),
      card("Orders, last hour", String(hl.orders_last_hour), `${hl.orders_in_progress} in progress`),
      card("Mean click-to-door", hl.mean_click_to_door_min === null ? "–" : `${hl.mean_click_to_door_min} min`, `${hl.delivered_last_hour} delivered, last hour`),
      card("Late", String(hl.late_open + hl.late_delivered_last_hour), `${hl.late_open} open, ${hl.late_delivered_last_hour} delivered late (over ${hl.late_after_min} min)`),
      card("Open offers", String(hl.open_job_offers + hl.open_route_offers), `${hl.open_job_offers} to shops, ${hl.open_route_offers} to couriers`),
      card("Couriers on shift", String(onShift.length), `${onShift.filter((c) => c.stale).length} stale, ${onShift.filter((c) => busy(c.id)).length} busy`),
    );
  }

  function busy(courierId) {
    return routes.some((r) => r.courier_id === courierId);
  }

  function shopName(id) {
    return shops.get(id)?.name || shortId(id);
  }

  function courierName(id) {
    return couriers.get(id)?.name || fleet.get(id)?.name || shortId(id);
  }

  function renderOrders() {
    fill(
      $("#orders"),
      listed.length
        ? listed.map((o) =>
            h(
              "tr",
              { class: `clickable${o.id === selected ? " selected" : ""}`, dataset: { order: o.id }, onclick: () => select(o.id) },
              h("td", {}, h("button", { type: "button", class: "link", onclick: (e) => (e.stopPropagation(), select(o.id)) }, shortId(o.id))),
              h("td", {}, h("span", { class: `state ${o.state}` }, words(o.state))),
              h("td", {}, clockTime(o.created_at)),
              h("td", { class: "small" }, [...new Set(o.jobs.filter((j) => !["rejected", "expired"].includes(j.state)).map((j) => shopName(j.shop_id)))].join(", ")),
              h("td", {}, money(o.total_cents)),
            ),
          )
        : h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No order matches.")),
    );
    $("#more").hidden = !next;
    $("#orders-count").textContent = `${listed.length} shown`;
  }

  function positionText(c) {
    const live = fleet.get(c.id);
    const position = live?.position;
    return !c.on_shift ? "–" : !position ? "no position" : `${live.stale ? "stale" : "fresh"} · ${clockTime(position.at)}`;
  }

  // Rows hold buttons: when only positions moved (every poll), those cells are updated in place, so a click or
  // keyboard focus on a row's button is not lost to a rebuilt table.
  let fleetShown = "";
  function renderFleet() {
    const all = [...couriers.values()].sort((a, b) => Number(b.on_shift) - Number(a.on_shift) || a.name.localeCompare(b.name, undefined, { numeric: true }));
    const shown = JSON.stringify([
      chosenCourier,
      all.map((c) => [c, routes.filter((r) => r.courier_id === c.id), Boolean(fleet.get(c.id)?.position)]),
    ]);
    if (shown === fleetShown) {
      for (const c of all) {
        const cell = document.querySelector(`#fleet tr[data-courier="${c.id}"] td.position`);
        if (cell) cell.textContent = positionText(c);
      }
      return renderRoutes();
    }
    fleetShown = shown;
    fill(
      $("#fleet"),
      all.map((c) => {
        const mine = routes.filter((r) => r.courier_id === c.id);
        const open = mine.flatMap((r) => r.stops.filter((s) => OPEN_STOP.has(s.state)));
        return h(
          "tr",
          { class: `clickable${c.id === chosenCourier ? " selected" : ""}`, dataset: { courier: c.id }, onclick: () => chooseCourier(c.id) },
          h("td", {}, h("button", { type: "button", class: "link", onclick: (e) => (e.stopPropagation(), chooseCourier(c.id)) }, c.name), h("div", { class: "muted small" }, `capacity ${c.capacity}`)),
          h("td", {}, c.on_shift ? "on shift" : "off shift", c.shift_ends_at ? h("div", { class: "muted small" }, `ends ${clockTime(c.shift_ends_at)}`) : null),
          h("td", {}, mine.length ? `busy: ${open.length} stop(s)` : c.on_shift ? "free" : "–", mine.some((r) => r.state === "offered") ? h("div", { class: "small" }, "route offered") : null),
          h("td", { class: "small position" }, positionText(c)),
          h(
            "td",
            {},
            h(
              "button",
              {
                type: "button",
                class: c.on_shift ? "danger" : "",
                onclick: (e) => {
                  e.stopPropagation();
                  const verb = c.on_shift ? "end" : "start";
                  act(e.target, `${c.name}: shift ${verb === "end" ? "ended" : "started"}`, async () => {
                    await api("POST", `/v1/couriers/${c.id}/shift/${verb}`);
                    await Promise.all([readCouriers(), readLive()]);
                    renderAll();
                  });
                },
              },
              c.on_shift ? "End shift" : "Start shift",
            ),
          ),
        );
      }),
    );
    renderRoutes();
  }

  function chooseCourier(id) {
    chosenCourier = chosenCourier === id ? null : id;
    renderFleet();
    drawMap();
  }

  // Lists are drawn again as positions come in: a choice being made survives that.
  const picks = new Map();
  function courierPicker(exclude, key) {
    const options = [...fleet.values()].filter((c) => c.id !== exclude && !c.stale).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    const select = h(
      "select",
      { "aria-label": "courier to give the work to", onchange: (e) => picks.set(key, e.target.value) },
      h("option", { value: "" }, "choose a courier…"),
      options.map((c) => h("option", { value: c.id }, `${c.name}${busy(c.id) ? " (busy)" : " (free)"}`)),
    );
    if (options.some((c) => c.id === picks.get(key))) select.value = picks.get(key);
    return select;
  }

  function nextStopOf(courierId) {
    for (const r of routes) {
      if (r.courier_id !== courierId || r.state !== "active") continue;
      const open = r.stops.find((s) => OPEN_STOP.has(s.state));
      if (open) return open.id;
    }
    return null;
  }

  function stopLine(s, route) {
    const label = s.kind === "pickup" ? `pick up at ${shopName(s.shop_id)}` : `deliver order ${shortId(s.order_id)}`;
    const actions = [];
    if (s.locked) {
      actions.push(h("button", { type: "button", onclick: (e) => act(e.target, "Stop unlocked", () => api("POST", `/v1/stops/${s.id}/unlock`).then(refresh)) }, "Unlock"));
    }
    // The stops go in order: only the courier's next one can be recorded.
    if (s.id === nextStopOf(route.courier_id)) {
      const step = s.state === "pending" ? "arrived" : "completed";
      actions.push(
        h(
          "button",
          { type: "button", title: "record it for the courier, without the proof it needs", onclick: (e) => act(e.target, `Recorded: ${step}`, () => api("POST", `/v1/stops/${s.id}/override`, { step }).then(refresh)) },
          step === "arrived" ? "Record arrival" : "Record completion",
        ),
      );
    }
    return h(
      "li",
      { dataset: { stop: s.id } },
      `${label} `,
      h("span", { class: `state ${s.state}` }, words(s.state)),
      s.locked ? h("strong", {}, " locked (wrong codes)") : null,
      h("span", { class: "muted small" }, ` · ETA ${clockTime(s.eta.arrival)}${s.proof ? ` · proof: ${s.proof}` : ""}`),
      actions.length ? h("span", {}, " ", actions) : null,
    );
  }

  // The courier's routes hold controls (a courier picker, buttons): rebuilt only when what they show changes,
  // not by every position poll, so a click, an open picker or keyboard focus in them is never lost.
  let routesShown = "";
  function renderRoutes() {
    const box = $("#routes");
    const mine = chosenCourier ? routes.filter((r) => r.courier_id === chosenCourier) : [];
    const others = [...fleet.values()].map((c) => [c.id, c.name, c.stale, busy(c.id)]);
    const shown = JSON.stringify([chosenCourier, mine, others, nextStopOf(chosenCourier)]);
    if (shown === routesShown) return;
    routesShown = shown;
    if (!chosenCourier) return fill(box);
    fill(
      box,
      h("h3", {}, `${courierName(chosenCourier)}'s routes`),
      mine.length
        ? mine.map((r) => {
            const picker = courierPicker(chosenCourier, r.id);
            return h(
              "div",
              { class: "card", dataset: { route: r.id } },
              h("div", {}, `Route ${shortId(r.id)} `, h("span", { class: `state ${r.state}` }, words(r.state))),
              h("ol", { class: "small" }, r.stops.map((s) => stopLine(s, r))),
              h(
                "div",
                { class: "row" },
                picker,
                h(
                  "button",
                  {
                    type: "button",
                    onclick: (e) =>
                      picker.value
                        ? act(e.target, `Work given to ${courierName(picker.value)}`, () => api("POST", `/v1/routes/${r.id}/move`, { courier_id: picker.value }).then(refresh))
                        : say("Choose a courier first.", "error"),
                  },
                  "Give what is left to collect",
                ),
              ),
            );
          })
        : h("p", { class: "muted" }, "No live route."),
    );
  }

  function renderRounds() {
    fill(
      $("#rounds"),
      rounds.length
        ? rounds.map((r) =>
            h(
              "tr",
              {},
              h("td", {}, String(r.round)),
              h("td", {}, clockTime(r.at)),
              h("td", {}, String(r.jobs)),
              h("td", {}, r.placed === null ? "–" : String(r.placed)),
              h("td", {}, r.held === null ? "–" : String(r.held)),
              h("td", {}, String(r.couriers)),
              h("td", {}, String(r.routes)),
              h("td", {}, String(r.released)),
              h("td", {}, r.seconds === null ? "–" : String(Math.round(r.seconds * 1000))),
            ),
          )
        : h("tr", {}, h("td", { colspan: "9", class: "muted" }, "No round yet.")),
    );
  }

  function select(orderId) {
    selected = selected === orderId ? null : orderId;
    detail = null;
    // At once, not after the read: the order shown before must not keep its buttons under the pointer (a
    // click landing there would cancel the wrong order).
    renderOrders();
    renderDetail();
    queue(async () => {
      await readDetail();
      renderOrders();
      renderDetail();
      drawMap();
    });
  }

  async function refresh() {
    await Promise.all([readLive(), readSummary(), readOrders(), readDetail()]);
    renderAll();
  }

  function eventLine(e) {
    const d = e.data;
    const state = d.state && !e.type.endsWith(`.${d.state}`) ? ` → ${words(d.state)}` : "";
    let extra = "";
    if (e.type === "order.eta") extra = ` · at the door ${clockTime(d.eta)}`;
    if (e.type.startsWith("route.")) extra = ` · route ${shortId(d.id)}, ${d.stops.filter((s) => s.order_id === selected).map((s) => words(s.state)).join(", ")}`;
    if (e.type.startsWith("job.") && d.reason) extra = ` · reason: ${d.reason}`;
    const who = e.role === "shop" ? shopName(e.recipient) : e.role === "courier" ? courierName(e.recipient) : "resident";
    return h("li", {}, h("span", { class: "muted" }, clockTime(e.at)), ` ${words(e.type.replace(".", " "))}${state}${extra} `, h("span", { class: "muted small" }, `(to ${who})`));
  }

  function renderDetail() {
    const box = $("#detail");
    box.hidden = !selected;
    if (!selected || !detail) return fill(box, selected ? h("p", { class: "muted" }, "Reading…") : null);
    const o = detail.order;
    const orderRoutes = routes.filter((r) => r.stops.some((s) => s.order_id === o.id || o.jobs.some((j) => s.job_ids.includes(j.id))));
    const courierOf = (jobId) => routes.find((r) => r.stops.some((s) => s.job_ids.includes(jobId)))?.courier_id;
    fill(
      box,
      h("h2", {}, `Order ${shortId(o.id)} `, h("span", { class: `state ${o.state}` }, words(o.state)), " ", h("button", { type: "button", class: "link", onclick: () => select(o.id) }, "close")),
      h("p", { class: "small" }, `${o.fulfilment === "pickup" ? "pick-up at the shop" : "delivery"} · placed ${clockTime(o.created_at)} · resident ${residents.get(o.resident_id)?.name || ""} ${o.resident_id} · ${money(o.total_cents)}${o.slot ? ` · slot ${clockTime(o.slot.start)}–${clockTime(o.slot.end)}` : ""}${o.note ? ` · note: ${o.note}` : ""}`),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, h("th", {}, "Shop"), h("th", {}, "Job"), h("th", {}, "Lines"), h("th", {}, "Courier"), h("th", {}, ""))),
        h(
          "tbody",
          {},
          o.jobs.map((j) => {
            const courier = courierOf(j.id);
            const movable = ["accepted", "ready"].includes(j.state) && o.fulfilment === "delivery";
            const picker = movable ? courierPicker(courier, j.id) : null;
            return h(
              "tr",
              { dataset: { job: j.id } },
              h("td", {}, shopName(j.shop_id)),
              h("td", {}, h("span", { class: `state ${j.state}` }, words(j.state)), j.reason ? h("div", { class: "muted small" }, j.reason) : null),
              h("td", { class: "small" }, j.lines.map((l) => `${l.qty} × ${l.sku}`).join(", ")),
              h("td", {}, courier ? courierName(courier) : "–"),
              h(
                "td",
                {},
                movable
                  ? h(
                      "span",
                      { class: "row" },
                      picker,
                      h(
                        "button",
                        {
                          type: "button",
                          onclick: (e) =>
                            picker.value
                              ? act(e.target, `Job given to ${courierName(picker.value)}`, () => api("POST", `/v1/jobs/${j.id}/move`, { courier_id: picker.value }).then(refresh))
                              : say("Choose a courier first.", "error"),
                        },
                        courier ? "Move" : "Assign",
                      ),
                    )
                  : null,
              ),
            );
          }),
        ),
      ),
      orderRoutes.length ? h("div", {}, h("h3", {}, "Stops"), orderRoutes.map((r) => h("div", {}, h("div", { class: "small" }, `${courierName(r.courier_id)}, route ${shortId(r.id)} (${words(r.state)})`), h("ol", { class: "small" }, r.stops.map((s) => stopLine(s, r)))))) : null,
      FINISHED.has(o.state)
        ? null
        : h("div", { class: "row" }, h("button", { type: "button", class: "danger", onclick: (e) => act(e.target, `Order ${shortId(o.id)} cancelled`, () => api("POST", `/v1/orders/${o.id}/cancel`).then(refresh)) }, "Cancel order")),
      h("h3", {}, "Timeline"),
      h("ol", { class: "plain timeline", id: "timeline" }, detail.timeline.map(eventLine)),
    );
  }

  // --- the map -----------------------------------------------------------------------------------------

  function drawMap() {
    const chosenShops = new Set(detail ? detail.order.jobs.map((j) => j.shop_id) : []);
    map.draw("zones", (add) => {
      if (!$("#show-zones").checked) return;
      for (const s of shops.values()) {
        if (!s.active) continue;
        const el = map.geojson(s.zone, chosenShops.has(s.id) ? "selected" : "", `${s.name}'s delivery zone`);
        if (el) add(el);
      }
    });
    map.draw("cells", (add) => {
      if (!cells) return;
      for (const c of cells.cells) add(map.polygon(c.boundary, c.edge ? "edge" : "", `H3 cell ${c.cell}${c.edge ? " (the zone's edge crosses it)" : ""}`));
    });
    map.draw("shops", (add) => {
      for (const s of shops.values()) {
        add(map.marker(s.lat, s.lng, { shape: "square", size: 4, cls: `shop${s.active ? "" : " inactive"}`, label: chosenShops.has(s.id) ? s.name : null, title: `${s.name} (${s.active ? "taking orders" : "not taking orders"})` }));
      }
    });
    map.draw("orders", (add) => {
      const shown = new Map(openOrders.map((o) => [o.id, o]));
      if (detail && !shown.has(detail.order.id)) shown.set(detail.order.id, detail.order);
      for (const o of shown.values()) {
        add(
          map.marker(o.dropoff.lat, o.dropoff.lng, {
            size: o.id === selected ? 7 : 5,
            cls: `order ${o.state}${o.id === selected ? " selected" : ""}`,
            label: o.id === selected ? `order ${shortId(o.id)}` : null,
            title: `order ${shortId(o.id)}: ${words(o.state)}`,
            onclick: () => select(o.id),
          }),
        );
      }
    });
    map.draw("routes", (add) => {
      for (const r of routes) {
        const at = fleet.get(r.courier_id)?.position;
        const path = [at ? [at.lat, at.lng] : null, ...r.stops.filter((s) => OPEN_STOP.has(s.state)).map((s) => [s.location.lat, s.location.lng])].filter(Boolean);
        if (path.length > 1) add(map.line(path, "", `${courierName(r.courier_id)}'s route ${shortId(r.id)}`));
      }
    });
    map.draw("couriers", (add) => {
      for (const c of fleet.values()) {
        if (!c.position) continue;
        const chosen = c.id === chosenCourier;
        add(
          map.marker(c.position.lat, c.position.lng, {
            shape: "triangle",
            size: chosen ? 8 : 6,
            cls: `courier${c.stale ? " stale" : busy(c.id) ? " busy" : ""}`,
            label: c.name,
            title: `${c.name}: ${c.stale ? "stale" : busy(c.id) ? "busy" : "free"}, at ${clockTime(c.position.at)}`,
            onclick: () => chooseCourier(c.id),
          }),
        );
      }
    });
  }

  // --- controls ----------------------------------------------------------------------------------------

  fill($("#f-state"), h("option", { value: "" }, "any"), h("option", { value: "open" }, "in progress"), ORDER_STATES.map((s) => h("option", { value: s }, words(s))));
  $("#filters").addEventListener("change", () => queue(async () => (await readOrders(), renderOrders())));
  $("#filters").addEventListener("submit", (e) => (e.preventDefault(), queue(async () => (await readOrders(), renderOrders()))));
  $("#more").addEventListener("click", () => queue(async () => (await readOrders(true), renderOrders())));
  $("#busy-rounds").addEventListener("change", () => queue(async () => (await readSummary(), renderRounds())));
  $("#show-zones").addEventListener("change", drawMap);
  $("#cells-shop").addEventListener("change", (e) =>
    queue(async () => {
      cells = e.target.value ? await api("GET", `/v1/shops/${e.target.value}/zone/cells`) : null;
      drawMap();
    }),
  );
  for (const name of ["orders", "fleet", "rounds"]) {
    $(`#tab-${name}`).addEventListener("click", () => {
      for (const other of ["orders", "fleet", "rounds"]) {
        $(`#tab-${other}`).setAttribute("aria-selected", String(other === name));
        $(`#panel-${other}`).hidden = other !== name;
      }
    });
  }

  // Positions move all the time: read them every two seconds while the page is seen.
  let online = false;
  setInterval(() => {
    if (document.hidden || !online || !map.hasFrame()) return;
    queue(async () => {
      await readLive();
      renderCards();
      renderFleet();
      drawMap();
    });
  }, POLL_MS);
  setInterval(() => {
    if (!document.hidden && online) queue(async () => (await Promise.all([readSummary(), readDetail()]), renderAll()));
  }, FALLBACK_MS);

  new Live({
    token: session.token,
    subject: "ops",
    onState: (name, text) => {
      online = name === "live";
      showConnection(name, text);
    },
    onHello: () => queue(readAll),
    onVolatile: onHint,
  }).start();
}

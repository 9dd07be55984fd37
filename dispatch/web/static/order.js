// The resident app: a point (the map, the device's location, or typed), the shops delivering there and
// what they sell, a cart, how the order will be split before placing it, delivery or pick-up and a slot;
// then the order live: its state, its ETA and code, and the courier's position only during the delivery.
import {
  $,
  ApiError,
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
import { MapView, metres } from "./map.js";

const CURRENT_KEY = "dispatch.order.current";
const CANCELLABLE = new Set(["placed", "accepted", "preparing", "ready"]);
const FINISHED = new Set(["delivered", "cancelled", "unfulfilled"]);

const session = requireSignIn("resident", "/order");
if (session) start(session);

function start(session) {
  let point = null;
  let nearby = [];
  const names = new Map(); // shop id -> name
  const zones = new Map(); // shop id -> GeoJSON
  let items = []; // merged catalogue: {sku, name, price, shops}
  const cart = new Map(); // sku -> qty
  let quoted = null;
  let current = null;
  let delivery = null;
  let eta = null;
  let courierAt = null;
  let history = [];
  let area = null;
  const map = new MapView($("#map"), { label: "where to deliver", onPick: (lat, lng) => choose(lat, lng) });
  let serial = Promise.resolve();
  const queue = (fn) => {
    serial = serial.then(fn).catch((e) => say(describe(e), "error"));
  };

  async function reload() {
    await clock.sync();
    if (!map.hasFrame()) {
      area = await api("GET", "/v1/area");
      if (area.south !== null) map.setFrame(area.south, area.west, area.north, area.east, 2500);
    }
    history = (await api("GET", "/v1/orders?limit=10")).items;
    const id = sessionStorage.getItem(CURRENT_KEY);
    if (id) await follow(id);
    renderSlots();
    renderHistory();
    drawMap();
  }

  async function follow(orderId) {
    try {
      current = await api("GET", `/v1/orders/${orderId}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        sessionStorage.removeItem(CURRENT_KEY);
        current = null;
        return;
      }
      throw e;
    }
    sessionStorage.setItem(CURRENT_KEY, orderId);
    await shopNames(current.jobs.map((j) => j.shop_id));
    await refreshDelivery();
    renderCurrent();
  }

  async function refreshDelivery() {
    delivery = current && current.fulfilment === "delivery" ? await api("GET", `/v1/orders/${current.id}/delivery`) : null;
    const coming = delivery && delivery.drop_offs.find((d) => d.state !== "completed" && d.eta);
    if (coming) eta = coming.eta;
  }

  async function shopNames(ids) {
    await Promise.all(
      [...new Set(ids)]
        .filter((id) => !names.has(id))
        .map(async (id) => {
          const shop = await api("GET", `/v1/shops/${id}`);
          names.set(id, shop.name);
          zones.set(id, shop.zone);
        }),
    );
  }

  // --- 1. where ----------------------------------------------------------------------------------------

  async function choose(lat, lng) {
    point = [Number(lat.toFixed(6)), Number(lng.toFixed(6))];
    $("#lat").value = String(point[0]);
    $("#lng").value = String(point[1]);
    quoted = null;
    const found = await api("GET", `/v1/shops/nearby?lat=${point[0]}&lng=${point[1]}&limit=20`);
    nearby = found.shops;
    for (const s of nearby) names.set(s.shop_id, s.name);
    await shopNames(nearby.map((s) => s.shop_id));
    $("#coverage").textContent = nearby.length
      ? `${nearby.length} shop${nearby.length > 1 ? "s" : ""} open and delivering here.`
      : "No open shop delivers here: try another point, or collect it yourself.";
    const catalogues = await Promise.all(nearby.map((s) => api("GET", `/v1/shops/${s.shop_id}/catalogue`)));
    const merged = new Map();
    catalogues.forEach((c, n) => {
      for (const item of c.items) {
        if (!item.stock || item.preorder_only) continue;
        const seen = merged.get(item.sku) || { sku: item.sku, name: item.name, price: item.price_cents, shops: [] };
        seen.price = Math.min(seen.price, item.price_cents);
        seen.shops.push(nearby[n].name);
        merged.set(item.sku, seen);
      }
    });
    items = [...merged.values()].sort((a, b) => a.name.localeCompare(b.name));
    renderCatalogue();
    renderCart();
    drawMap();
  }

  $("#point-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const lat = Number($("#lat").value);
    const lng = Number($("#lng").value);
    if (!Number.isFinite(lat) || !Number.isFinite(lng)) return say("Type a latitude and a longitude.", "error");
    queue(() => choose(lat, lng));
  });

  $("#locate").addEventListener("click", () => {
    if (!navigator.geolocation) return say("This browser has no location service: click the map instead.", "error");
    navigator.geolocation.getCurrentPosition(
      (p) => queue(() => choose(p.coords.latitude, p.coords.longitude)),
      (e) => say(`Location unavailable: ${e.message}`, "error"),
    );
  });

  // --- 2. what -----------------------------------------------------------------------------------------

  function renderCatalogue() {
    $("#shop-section").hidden = !point;
    fill(
      $("#catalogue"),
      items.length
        ? items.map((item) => {
            const qty = cart.get(item.sku) || 0;
            const change = (d) => {
              const n = Math.max(0, (cart.get(item.sku) || 0) + d);
              if (n) cart.set(item.sku, n);
              else cart.delete(item.sku);
              quoted = null;
              renderCatalogue();
              renderCart();
            };
            return h(
              "li",
              { dataset: { sku: item.sku } },
              h("div", { class: "row" }, h("strong", {}, item.name), h("span", { class: "muted small" }, `from ${money(item.price)} · at ${item.shops.join(", ")}`)),
              h(
                "div",
                { class: "row" },
                h("button", { type: "button", "aria-label": `one less ${item.name}`, onclick: () => change(-1), disabled: !qty }, "−"),
                h("span", { class: "qty", "aria-label": `${item.name} in the cart` }, String(qty)),
                h("button", { type: "button", "aria-label": `one more ${item.name}`, onclick: () => change(1) }, "+"),
              ),
            );
          })
        : h("li", { class: "muted" }, point ? "Nothing available here now." : "Choose a point first."),
    );
  }

  // --- 3. how ------------------------------------------------------------------------------------------

  function renderCart() {
    const lines = [...cart.entries()];
    $("#checkout").hidden = !lines.length;
    fill($("#cart"), h("p", {}, "Cart: ", lines.map(([sku, qty]) => `${qty} × ${items.find((i) => i.sku === sku)?.name || sku}`).join(", ")));
    $("#place").disabled = !quoted;
    if (!quoted) fill($("#split"));
  }

  function renderSlots() {
    const now = clock.now();
    const first = new Date(now);
    first.setMinutes(0, 0, 0);
    first.setHours(first.getHours() + 1);
    const options = [h("option", { value: "asap" }, "as soon as possible")];
    for (let k = 0; k < 8; k++) {
      const start = new Date(first.getTime() + k * 3600_000);
      const end = new Date(start.getTime() + 3600_000);
      options.push(h("option", { value: `${start.toISOString()}|${end.toISOString()}` }, `${clockTime(start)}–${clockTime(end)}`));
    }
    const select = $("#slot");
    const chosen = select.value;
    fill(select, options);
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  function body() {
    const slot = $("#slot").value;
    const timing = slot === "asap" ? "asap" : { start: slot.split("|")[0], end: slot.split("|")[1] };
    const note = $("#note").value.trim();
    return {
      dropoff: { lat: point[0], lng: point[1] },
      items: [...cart.entries()].map(([sku, qty]) => ({ sku, qty })),
      fulfilment: document.querySelector("input[name=fulfilment]:checked").value,
      timing,
      ...(note ? { note } : {}),
    };
  }

  for (const el of [$("#slot"), $("#note"), ...document.querySelectorAll("input[name=fulfilment]")]) {
    el.addEventListener("change", () => {
      quoted = null;
      renderCart();
    });
  }

  $("#quote").addEventListener("click", (e) =>
    act(e.target, null, async () => {
      quoted = await api("POST", "/v1/orders/quote", body());
      fill(
        $("#split"),
        h("h3", {}, quoted.jobs.length > 1 ? `Split between ${quoted.jobs.length} shops` : "From one shop"),
        h(
          "ul",
          { class: "plain", id: "split-list" },
          quoted.jobs.map((j) =>
            h(
              "li",
              { dataset: { shop: j.shop_id } },
              h("strong", {}, j.shop_name),
              `: ${j.lines.map((l) => `${l.qty} × ${l.sku}`).join(", ")} · ${money(j.subtotal_cents)}`,
              h("span", { class: "muted small" }, ` · ready and there in about ${Math.round(j.ready_and_travel_minutes)} min`),
            ),
          ),
        ),
        h("p", {}, h("strong", {}, `Total ${money(quoted.total_cents)}`)),
      );
      $("#place").disabled = false;
    }),
  );

  $("#place").addEventListener("click", (e) =>
    act(e.target, "Order placed", async () => {
      const order = await api("POST", "/v1/orders", body(), { "Idempotency-Key": crypto.randomUUID() });
      cart.clear();
      quoted = null;
      renderCatalogue();
      renderCart();
      remember(order);
      await follow(order.id);
    }),
  );

  // --- the order, live ---------------------------------------------------------------------------------

  function renderCurrent() {
    const box = $("#current");
    box.hidden = !current;
    if (!current) return;
    const code = delivery && delivery.code;
    const showCourier = current.state === "in_delivery" && courierAt;
    const door = [current.dropoff.lat, current.dropoff.lng];
    fill(
      box,
      h("h2", {}, `Your order ${shortId(current.id)} `, h("span", { class: `state ${current.state}`, id: "order-state" }, words(current.state))),
      h(
        "ul",
        { class: "plain small" },
        current.jobs
          .filter((j) => !["rejected", "expired"].includes(j.state))
          .map((j) =>
            h("li", {}, `${names.get(j.shop_id) || shortId(j.shop_id)}: `, h("span", { class: `state ${j.state}` }, words(j.state)), ` · ${j.lines.map((l) => `${l.qty} × ${l.sku}`).join(", ")}`),
          ),
      ),
      current.unfulfilled.length ? h("p", {}, "Not coming: ", current.unfulfilled.map((l) => `${l.qty} × ${l.sku}`).join(", ")) : null,
      current.fulfilment === "pickup"
        ? h("p", {}, current.state === "ready" ? "Ready: collect it at the shop." : "You collect it at the shop when it is ready.")
        : null,
      eta && !FINISHED.has(current.state) ? h("p", {}, `Courier at your door around ${clockTime(eta)}`) : null,
      code && !FINISHED.has(current.state) ? h("p", {}, "Give the courier this code: ", h("span", { class: "code", id: "delivery-code" }, code)) : null,
      showCourier ? h("p", { id: "courier" }, `Your courier is on the way: ${Math.round(metres(courierAt, door))} m from your door.`) : null,
      CANCELLABLE.has(current.state)
        ? h(
            "div",
            { class: "row" },
            h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: (e) =>
                  act(e.target, "Order cancelled", async () => {
                    current = await api("POST", `/v1/orders/${current.id}/cancel`);
                    renderCurrent();
                  }),
              },
              "Cancel order",
            ),
          )
        : null,
    );
    drawMap();
  }

  function remember(order) {
    const at = history.findIndex((o) => o.id === order.id);
    if (at >= 0) history[at] = order;
    else history.unshift(order);
    renderHistory();
  }

  function renderHistory() {
    fill(
      $("#history"),
      history.length
        ? history.map((o) =>
            h(
              "li",
              {},
              h("button", { type: "button", class: "link", onclick: () => queue(() => follow(o.id)) }, `Order ${shortId(o.id)}`),
              " ",
              h("span", { class: `state ${o.state}` }, words(o.state)),
              h("span", { class: "muted small" }, ` · ${clockTime(o.created_at)} · ${money(o.total_cents)}`),
            ),
          )
        : h("li", { class: "muted" }, "No order yet."),
    );
  }

  async function apply(event) {
    const data = event.data;
    if (["order.placed", "order.updated", "order.ready_for_pickup"].includes(event.type)) {
      remember(data);
      if (current && data.id === current.id) {
        current = data;
        if (FINISHED.has(current.state)) courierAt = null;
        if (data.courier && data.courier.state === "reassigning") say("Your courier changed: another one is on the way.", "info");
        await shopNames(current.jobs.map((j) => j.shop_id));
        await refreshDelivery();
        renderCurrent();
      }
    } else if (event.type === "order.eta" && current && data.order_id === current.id) {
      eta = data.eta;
      renderCurrent();
    } else if (event.type === "order.items_unfulfilled" && current && data.order_id === current.id) {
      say(`No shop is left for: ${data.items.map((l) => `${l.qty} × ${l.sku}`).join(", ")}`, "error");
    }
  }

  // The server sends the courier's position only from the pickup of your order until its delivery.
  function onVolatile(msg) {
    if (msg.type !== "courier.position" || !current || current.state !== "in_delivery") return;
    courierAt = [msg.data.lat, msg.data.lng];
    renderCurrent();
  }

  function drawMap() {
    map.draw("zones", (add) => {
      if (area && area.south !== null) {
        const corners = [[area.south, area.west], [area.south, area.east], [area.north, area.east], [area.north, area.west]];
        add(map.polygon(corners, "area", "the shops of the neighbourhood are inside this box"));
      }
      for (const s of nearby) add(map.geojson(zones.get(s.shop_id), "", `${s.name} delivers inside this line`));
    });
    map.draw("shops", (add) => {
      for (const s of nearby) add(map.marker(s.lat, s.lng, { shape: "square", cls: "shop", label: s.name, title: `${s.name}: ${Math.round(s.distance_m)} m away` }));
    });
    map.draw("me", (add) => {
      if (point) add(map.marker(point[0], point[1], { cls: "me", size: 7, title: "your point" }));
    });
    map.draw("couriers", (add) => {
      if (current && current.state === "in_delivery" && courierAt) {
        add(map.marker(courierAt[0], courierAt[1], { shape: "diamond", cls: "courier busy", size: 7, label: "your courier", title: "your courier" }));
      }
    });
  }

  setInterval(renderSlots, 60_000);

  new Live({
    token: session.token,
    subject: session.subject,
    onState: showConnection,
    onHello: () => queue(reload),
    onEvent: (event) => queue(() => apply(event)),
    onVolatile,
  }).start();
}

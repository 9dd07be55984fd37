// The shop app: offers to answer before their deadline (seen and heard), the day's jobs from acceptance to
// hand-over, the stock, and whether the shop takes orders at all.
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
  h,
  money,
  requireSignIn,
  say,
  shortId,
  showConnection,
  words,
} from "./api.js";

const REASONS = ["out of stock", "too busy", "closing soon"];
const DONE = new Set(["picked_up", "delivered", "rejected", "expired", "cancelled", "unfulfilled"]);

const session = requireSignIn("shop", "/shop");
if (session) start(session);

function start(session) {
  const shopId = session.subject;
  const jobs = new Map();
  const heard = new Set(); // offers already announced
  let shop = null;
  let catalogue = [];
  let audio = null;
  let serial = Promise.resolve();
  const queue = (fn) => {
    serial = serial.then(fn).catch((e) => say(describe(e), "error"));
  };

  async function reload() {
    await clock.sync();
    shop = await api("GET", `/v1/shops/${shopId}`);
    const page = await api("GET", `/v1/shops/${shopId}/jobs?limit=100`);
    jobs.clear();
    for (const job of page.items) jobs.set(job.id, job);
    catalogue = (await api("GET", `/v1/shops/${shopId}/catalogue`)).items;
    document.title = shop.name;
    $("#title").textContent = shop.name;
    renderAvailability();
    renderStock();
    render();
  }

  function apply(event) {
    if (!event.type.startsWith("job.")) return;
    const job = event.data;
    const before = jobs.get(job.id);
    jobs.set(job.id, job);
    if (event.type === "job.expired" && before && before.state === "offered") {
      say(`The offer for order ${shortId(job.order_id)} expired: it went to another shop.`, "info");
    }
    if (event.type === "job.cancelled") say(`Order ${shortId(job.order_id)} was cancelled.`, "info");
    render();
  }

  // --- offers: a banner, the title, and a beep for each new one ---------------------------------------

  function openOffers() {
    return [...jobs.values()]
      .filter((j) => j.state === "offered" && j.deadline_at && countdown(j.deadline_at).seconds > 0)
      .sort((a, b) => Date.parse(a.deadline_at) - Date.parse(b.deadline_at));
  }

  function announce(offers) {
    const alert = $("#alert");
    if (!offers.length) {
      alert.hidden = true;
      document.title = shop ? shop.name : "Shop";
      return;
    }
    const first = countdown(offers[0].deadline_at);
    alert.hidden = false;
    alert.textContent =
      `${offers.length} new offer${offers.length > 1 ? "s" : ""}: ` + `answer within ${first.text}`;
    document.title = `(${offers.length}) ${shop ? shop.name : "Shop"}`;
    const fresh = offers.filter((o) => !heard.has(o.id));
    for (const o of fresh) heard.add(o.id);
    if (fresh.length) beep();
  }

  function beep() {
    const button = $("#sound");
    if (!audio) return;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.15;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.25);
    button.dataset.beeps = String(Number(button.dataset.beeps || 0) + 1);
  }

  $("#sound").addEventListener("click", (e) => {
    // Browsers let a page make sound only after a gesture: this button is it.
    if (audio) {
      audio.close();
      audio = null;
    } else {
      audio = new AudioContext();
    }
    e.target.textContent = audio ? "Sound: on" : "Sound: off";
    e.target.setAttribute("aria-pressed", String(Boolean(audio)));
    if (audio) beep();
  });

  function offerItem(job) {
    const left = countdown(job.deadline_at);
    const prep = h("input", {
      type: "number",
      min: "1",
      max: "240",
      value: String(job.prep_minutes || (shop && shop.prep_minutes) || 15),
      "aria-label": "preparation minutes",
    });
    const reason = h(
      "select",
      { "aria-label": "reason to reject" },
      REASONS.map((r) => h("option", { value: r }, r)),
    );
    return h(
      "li",
      { dataset: { job: job.id }, class: "offer" },
      h(
        "div",
        { class: "row" },
        h("strong", {}, `Order ${shortId(job.order_id)}`),
        h("span", { class: "state offered" }, "offered"),
        h("span", {}, "answer within "),
        h("span", { class: `countdown${left.seconds < 15 ? " urgent" : ""}`, dataset: { deadline: job.deadline_at } }, left.text),
      ),
      lines(job),
      h(
        "div",
        { class: "row" },
        h("label", {}, "Ready in", prep, "min"),
        h(
          "button",
          {
            type: "button",
            class: "primary",
            onclick: (e) =>
              act(e.target, `Accepted order ${shortId(job.order_id)}`, async () => {
                const body = await api("POST", `/v1/jobs/${job.id}/accept`, { prep_minutes: Number(prep.value) });
                jobs.set(job.id, { ...jobs.get(job.id), ...body });
                render();
              }),
          },
          "Accept",
        ),
      ),
      h(
        "div",
        { class: "row" },
        reason,
        h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: (e) =>
              act(e.target, `Rejected order ${shortId(job.order_id)}`, async () => {
                const body = await api("POST", `/v1/jobs/${job.id}/reject`, { reason: reason.value });
                jobs.set(job.id, { ...jobs.get(job.id), ...body });
                render();
              }),
          },
          "Reject",
        ),
      ),
    );
  }

  function lines(job) {
    return h(
      "div",
      { class: "small" },
      h("div", {}, job.lines.map((l) => `${l.qty} × ${l.sku}`).join(", ")),
      h(
        "div",
        { class: "muted" },
        job.fulfilment === "pickup" ? "collected at the counter" : "delivered by a courier",
        job.slot ? ` · slot ${clockTime(job.slot.start)}–${clockTime(job.slot.end)}` : " · as soon as possible",
        job.note ? ` · note: ${job.note}` : "",
      ),
    );
  }

  function jobItem(job) {
    const buttons = [];
    if (job.state === "accepted") {
      buttons.push(
        h(
          "button",
          {
            type: "button",
            class: "primary",
            onclick: (e) =>
              act(e.target, `Order ${shortId(job.order_id)} is ready`, async () => {
                const body = await api("POST", `/v1/jobs/${job.id}/ready`);
                jobs.set(job.id, { ...jobs.get(job.id), ...body });
                render();
              }),
          },
          "Mark ready",
        ),
      );
    }
    if (job.state === "accepted" || job.state === "ready") {
      const who = job.fulfilment === "pickup" ? "the resident" : "the courier";
      buttons.push(
        h(
          "button",
          {
            type: "button",
            onclick: (e) =>
              act(e.target, `Handed over to ${who}`, async () => {
                jobs.set(job.id, await api("POST", `/v1/jobs/${job.id}/handover`));
                render();
              }),
          },
          `Handed to ${who}`,
        ),
      );
    }
    return h(
      "li",
      { dataset: { job: job.id } },
      h(
        "div",
        { class: "row" },
        h("strong", {}, `Order ${shortId(job.order_id)}`),
        h("span", { class: `state ${job.state}` }, words(job.state)),
        job.state === "accepted" && job.ready_at ? h("span", { class: "muted" }, `ready by ${clockTime(job.ready_at)}`) : null,
        job.reason ? h("span", { class: "muted" }, `reason: ${job.reason}`) : null,
      ),
      lines(job),
      buttons.length ? h("div", { class: "row" }, buttons) : null,
    );
  }

  function render() {
    const offers = openOffers();
    fill($("#offers"), offers.length ? offers.map(offerItem) : h("li", { class: "muted" }, "No offer waiting."));
    $("#offer-count").textContent = offers.length ? `(${offers.length})` : "";
    const today = new Date().toDateString();
    const rest = [...jobs.values()]
      .filter((j) => !(j.state === "offered" && offers.includes(j)))
      .filter((j) => !j.offered_at || new Date(j.offered_at).toDateString() === today)
      .sort((a, b) => (DONE.has(a.state) - DONE.has(b.state)) || Date.parse(b.offered_at || 0) - Date.parse(a.offered_at || 0));
    fill($("#jobs"), rest.length ? rest.map(jobItem) : h("li", { class: "muted" }, "No job today yet."));
    announce(offers);
  }

  // Countdowns tick; an offer whose time ran out leaves the list (the server re-offers it elsewhere).
  setInterval(() => {
    let expired = false;
    for (const el of document.querySelectorAll(".countdown[data-deadline]")) {
      const left = countdown(el.dataset.deadline);
      el.textContent = left.text;
      el.classList.toggle("urgent", left.seconds < 15);
      if (left.seconds === 0) expired = true;
    }
    if (expired) render();
    else announce(openOffers());
  }, 1000);

  // --- availability and stock ------------------------------------------------------------------------

  function renderAvailability() {
    $("#taking").checked = shop.active;
    $("#taking-state").textContent = shop.active ? "open for orders" : "not taking orders";
  }

  $("#taking").addEventListener("change", (e) =>
    act(e.target, e.target.checked ? "Taking orders again" : "Not taking orders", async () => {
      const body = await api("PUT", `/v1/shops/${shopId}/availability`, { active: e.target.checked });
      shop.active = body.active;
      renderAvailability();
    }),
  );

  function renderStock() {
    fill(
      $("#stock"),
      catalogue.map((item) => {
        const input = h("input", { type: "number", min: "0", value: String(item.stock), "aria-label": `stock of ${item.name}` });
        const save = (stock, button) =>
          act(button, `${item.name}: ${stock} in stock`, async () => {
            const body = {
              name: item.name,
              price_cents: item.price_cents,
              stock,
              preorder_only: item.preorder_only,
              lead_minutes: item.lead_minutes,
            };
            Object.assign(item, await api("PUT", `/v1/shops/${shopId}/catalogue/${encodeURIComponent(item.sku)}`, body));
            renderStock();
          });
        return h(
          "tr",
          {},
          h("td", {}, item.name, h("div", { class: "muted small" }, item.sku, item.stock ? "" : " · sold out")),
          h("td", {}, money(item.price_cents)),
          h("td", {}, input),
          h(
            "td",
            {},
            h("button", { type: "button", onclick: (e) => save(Number(input.value), e.target) }, "Save"),
            " ",
            h("button", { type: "button", onclick: (e) => save(0, e.target), disabled: item.stock === 0 }, "Sold out"),
          ),
        );
      }),
    );
  }

  new Live({
    token: session.token,
    subject: shopId,
    onState: showConnection,
    onHello: () => queue(reload),
    onEvent: (event) => queue(() => apply(event)),
  }).start();
}

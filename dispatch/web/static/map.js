// The apps' map: our own data drawn as SVG vectors in a local equirectangular projection around it (metres
// east and south of a centre: at a neighbourhood's scale the distortion is far below a pixel). No basemap,
// no tiles: zones, cells, shops, couriers, doors and routes are the map. Zoom with the buttons, the wheel
// or + and -; pan by dragging or with the arrow keys; a click (or Enter on the centre) may pick a point.

const SVG = "http://www.w3.org/2000/svg";
const R = 6371008.8;
const RAD = Math.PI / 180;
const LAYERS = ["zones", "cells", "routes", "shops", "orders", "couriers", "me"];

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  return el;
}

export class MapView {
  constructor(container, { onPick = null, label = "map" } = {}) {
    this.container = container;
    this.onPick = onPick;
    this.root = svg("svg", {
      class: "map",
      role: "application",
      tabindex: "0",
      "aria-label": `${label}: arrow keys pan, + and - zoom${onPick ? ", Enter picks the centre" : ""}`,
    });
    this.layers = {};
    for (const name of LAYERS) {
      this.layers[name] = svg("g", { class: `layer ${name}` });
      this.root.append(this.layers[name]);
    }
    const tools = document.createElement("div");
    tools.className = "map-tools";
    for (const [text, title, fn] of [
      ["+", "zoom in", () => this.zoom(0.7)],
      ["−", "zoom out", () => this.zoom(1 / 0.7)],
      ["fit", "show everything", () => this.fit()],
    ]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.title = title;
      b.setAttribute("aria-label", title);
      b.addEventListener("click", fn);
      tools.append(b);
    }
    container.replaceChildren(this.root, tools);
    this.origin = null;
    this.frame = null;
    this.view = null;
    this.draws = {};
    this.listen();
    new ResizeObserver(() => this.redraw()).observe(this.root);
  }

  // The projection is fixed by the first frame (the area the data covers), so moving things never move it.
  setFrame(south, west, north, east, marginM = 400) {
    if (south === null || south === undefined) return;
    if (!this.origin) this.origin = [(south + north) / 2, (west + east) / 2];
    const [x0, y0] = this.project(north, west);
    const [x1, y1] = this.project(south, east);
    this.frame = [x0 - marginM, y0 - marginM, x1 - x0 + 2 * marginM, y1 - y0 + 2 * marginM];
    if (!this.view) this.fit();
  }

  hasFrame() {
    return this.frame !== null;
  }

  project(lat, lng) {
    const [lat0, lng0] = this.origin;
    return [(lng - lng0) * RAD * R * Math.cos(lat0 * RAD), (lat0 - lat) * RAD * R];
  }

  unproject(x, y) {
    const [lat0, lng0] = this.origin;
    return [lat0 - y / (RAD * R), lng0 + x / (RAD * R * Math.cos(lat0 * RAD))];
  }

  fit() {
    if (!this.frame) return;
    this.view = [...this.frame];
    this.apply();
  }

  zoom(factor, at = null) {
    if (!this.view) return;
    const [x, y, w, h] = this.view;
    const [cx, cy] = at || [x + w / 2, y + h / 2];
    this.view = [cx - (cx - x) * factor, cy - (cy - y) * factor, w * factor, h * factor];
    this.apply();
  }

  pan(dx, dy) {
    if (!this.view) return;
    this.view[0] += dx * this.view[2];
    this.view[1] += dy * this.view[3];
    this.apply();
  }

  apply() {
    this.root.setAttribute("viewBox", this.view.map((v) => v.toFixed(1)).join(" "));
    this.redraw();
  }

  // Metres per screen pixel: markers and text keep their size on screen whatever the zoom.
  get px() {
    if (!this.view) return 1;
    const width = this.root.clientWidth || 600;
    const height = this.root.clientHeight || 400;
    return Math.max(this.view[2] / width, this.view[3] / height);
  }

  toMap(event) {
    const point = this.root.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const p = point.matrixTransform(this.root.getScreenCTM().inverse());
    return [p.x, p.y];
  }

  listen() {
    let drag = null;
    this.root.addEventListener("pointerdown", (e) => {
      drag = { start: this.toMap(e), moved: 0, x: e.clientX, y: e.clientY };
    });
    this.root.addEventListener("pointermove", (e) => {
      if (!e.buttons) drag = null;
      if (!drag || !this.view) return;
      const moved = Math.hypot(e.clientX - drag.x, e.clientY - drag.y);
      drag.moved = Math.max(drag.moved, moved);
      if (drag.moved < 5) return;
      const [x, y] = this.toMap(e);
      this.view[0] -= x - drag.start[0];
      this.view[1] -= y - drag.start[1];
      this.apply();
    });
    this.root.addEventListener("pointerup", (e) => {
      const wasClick = drag && drag.moved < 5;
      drag = null;
      if (wasClick && this.onPick && this.origin) {
        const [x, y] = this.toMap(e);
        this.onPick(...this.unproject(x, y));
      }
    });
    this.root.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.zoom(e.deltaY > 0 ? 1.2 : 1 / 1.2, this.toMap(e));
      },
      { passive: false },
    );
    this.root.addEventListener("keydown", (e) => {
      const keys = {
        ArrowLeft: () => this.pan(-0.1, 0),
        ArrowRight: () => this.pan(0.1, 0),
        ArrowUp: () => this.pan(0, -0.1),
        ArrowDown: () => this.pan(0, 0.1),
        "+": () => this.zoom(0.7),
        "=": () => this.zoom(0.7),
        "-": () => this.zoom(1 / 0.7),
        Enter: () => {
          if (this.onPick && this.view) {
            const [x, y, w, h] = this.view;
            this.onPick(...this.unproject(x + w / 2, y + h / 2));
          }
        },
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }

  // Each layer is drawn by a function kept here, so a zoom redraws markers at their screen size.
  draw(layer, fn) {
    this.draws[layer] = fn;
    this.render(layer);
  }

  redraw() {
    for (const layer of Object.keys(this.draws)) this.render(layer);
  }

  render(layer) {
    const g = this.layers[layer];
    g.replaceChildren();
    if (!this.origin) return;
    this.draws[layer]((el) => g.append(el));
  }

  // --- shapes ------------------------------------------------------------------------------------------

  geojson(geometry, cls, title) {
    if (!geometry) return null;
    const polygons = geometry.type === "MultiPolygon" ? geometry.coordinates : [geometry.coordinates];
    const d = polygons
      .flatMap((rings) => rings.map((ring) => this.pathOf(ring.map(([lng, lat]) => [lat, lng]), true)))
      .join(" ");
    return this.titled(svg("path", { d, class: cls, "fill-rule": "evenodd" }), title);
  }

  polygon(points, cls, title) {
    return this.titled(svg("path", { d: this.pathOf(points, true), class: cls }), title);
  }

  line(points, cls, title) {
    return this.titled(svg("path", { d: this.pathOf(points, false), class: cls, fill: "none" }), title);
  }

  pathOf(points, closed) {
    const parts = points.map(([lat, lng], i) => {
      const [x, y] = this.project(lat, lng);
      return `${i ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)}`;
    });
    return parts.join("") + (closed ? "Z" : "");
  }

  // A marker of a fixed screen size: circle, square, triangle or diamond, with an optional text label.
  marker(lat, lng, { shape = "circle", size = 6, cls = "", label = null, title = null, onclick = null } = {}) {
    const [x, y] = this.project(lat, lng);
    const r = size * this.px;
    let el;
    if (shape === "square") el = svg("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r });
    else if (shape === "triangle") {
      el = svg("path", { d: `M${x} ${y - 1.3 * r}L${x + 1.2 * r} ${y + r}L${x - 1.2 * r} ${y + r}Z` });
    } else if (shape === "diamond") {
      el = svg("path", { d: `M${x} ${y - 1.3 * r}L${x + 1.3 * r} ${y}L${x} ${y + 1.3 * r}L${x - 1.3 * r} ${y}Z` });
    } else el = svg("circle", { cx: x, cy: y, r });
    const g = svg("g", { class: `marker ${cls}` });
    g.append(el);
    if (label !== null) {
      const text = svg("text", { x: x + r * 1.5, y: y + r * 0.5, "font-size": 11 * this.px });
      text.textContent = label;
      g.append(text);
    }
    if (onclick) {
      g.classList.add("clickable");
      g.addEventListener("pointerup", (e) => {
        e.stopPropagation();
        onclick();
      });
    }
    return this.titled(g, title);
  }

  titled(el, title) {
    if (title) {
      const t = svg("title");
      t.textContent = title;
      el.append(t);
    }
    return el;
  }
}

// A box around points ([lat, lng]), for a frame.
export function bounds(points) {
  const ok = points.filter((p) => p && Number.isFinite(p[0]) && Number.isFinite(p[1]));
  if (!ok.length) return null;
  return [
    Math.min(...ok.map((p) => p[0])),
    Math.min(...ok.map((p) => p[1])),
    Math.max(...ok.map((p) => p[0])),
    Math.max(...ok.map((p) => p[1])),
  ];
}

export function metres(a, b) {
  const dlat = (b[0] - a[0]) * RAD;
  const dlng = (b[1] - a[1]) * RAD;
  const h = Math.sin(dlat / 2) ** 2 + Math.cos(a[0] * RAD) * Math.cos(b[0] * RAD) * Math.sin(dlng / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(Math.min(1, h)));
}

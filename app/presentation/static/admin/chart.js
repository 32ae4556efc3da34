// A live line chart in SVG, ours rather than a library's: two series of a few hundred points
// need no more than this, it runs under a CSP without 'unsafe-inline', and it leaves no
// third-party file to pin, audit and update. Series differ by dash pattern as well as colour,
// and the legend states the latest values as text.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600; // until the chart is on screen and has a width of its own
const MIN_WIDTH = 280;
const HEIGHT = 180;
const PAD = { left: 48, right: 8, top: 10, bottom: 22 };

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

export class LiveChart {
  constructor(container, { series, seconds = 120, unit = "req/s", label }) {
    this.series = series;
    this.seconds = seconds;
    this.unit = unit;
    this.points = [];
    this.container = container;
    this.root = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: "chart",
      role: "img",
      "aria-label": label,
    });
    this.grid = svg("g", { class: "grid" });
    this.lines = series.map((one) =>
      svg("polyline", { class: `line ${one.className}`, fill: "none", "vector-effect": "non-scaling-stroke" }),
    );
    this.root.append(this.grid, ...this.lines);
    this.legend = h("ul", { class: "legend" });
    container.replaceChildren(this.root, this.legend);
    // Drawn at the size it is shown (one unit a pixel), so its labels stay legible on a
    // phone and its lines use a wide screen's whole width instead of a scaled-down 600.
    // Only a new width redraws: the height follows from it and must not loop back here.
    this.resized = new ResizeObserver(() => {
      if (this.width() !== this.drawnWidth) this.render();
    });
    this.resized.observe(container);
    this.render();
  }

  width() {
    const shown = this.container.clientWidth;
    return shown ? Math.max(MIN_WIDTH, Math.round(shown)) : WIDTH;
  }

  destroy() {
    this.resized.disconnect();
  }

  push(time, values) {
    this.points.push({ time, values });
    const oldest = time - this.seconds * 1000;
    while (this.points.length && this.points[0].time < oldest) this.points.shift();
    this.render();
  }

  render() {
    const now = this.points.length ? this.points[this.points.length - 1].time : Date.now();
    const width = this.width();
    this.drawnWidth = width;
    this.root.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    let peak = 0;
    for (const point of this.points) for (const one of this.series) peak = Math.max(peak, point.values[one.key] || 0);
    const top = niceMax(peak);
    const x = (time) => PAD.left + ((time - (now - this.seconds * 1000)) / (this.seconds * 1000)) * (width - PAD.left - PAD.right);
    const y = (value) => HEIGHT - PAD.bottom - (value / top) * (HEIGHT - PAD.top - PAD.bottom);

    this.grid.replaceChildren();
    for (const fraction of [0, 0.5, 1]) {
      const value = top * fraction;
      this.grid.append(
        svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(value), y2: y(value) }),
        Object.assign(svg("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }), {
          textContent: Number.isInteger(value) ? String(value) : value.toFixed(1),
        }),
      );
    }
    for (const [time, label] of [[now - this.seconds * 1000, `−${this.seconds} s`], [now, "now"]]) {
      const anchor = label === "now" ? "end" : "start";
      this.grid.append(
        Object.assign(svg("text", { x: x(time), y: HEIGHT - 6, "text-anchor": anchor }), { textContent: label }),
      );
    }
    this.series.forEach((one, index) => {
      const coordinates = this.points.map((point) => `${x(point.time).toFixed(1)},${y(point.values[one.key] || 0).toFixed(1)}`);
      this.lines[index].setAttribute("points", coordinates.join(" "));
    });

    const latest = this.points.length ? this.points[this.points.length - 1].values : {};
    this.legend.replaceChildren(
      ...this.series.map((one) =>
        h("li", { class: one.className },
          h("span", { class: "swatch", "aria-hidden": "true" }),
          `${one.label}: `,
          h("strong", {}, latest[one.key] === undefined ? "—" : `${latest[one.key].toFixed(1)} ${this.unit}`),
        ),
      ),
    );
    const summary = this.series.map((one) => `${one.label} ${latest[one.key] === undefined ? "no data" : latest[one.key].toFixed(1)}`);
    this.root.setAttribute("aria-label", `${this.unit} over the last ${this.seconds} seconds; now: ${summary.join(", ")}`);
  }
}

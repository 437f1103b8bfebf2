// A small live line chart in SVG (no library, no canvas): the dashboard keeps the last
// samples in memory and redraws the chart on every poll.

import { s } from "./dom.js";

const W = 380;
const H = 160;
const PAD = { left: 40, right: 10, top: 10, bottom: 22 };

/** The smallest "round" number >= n (1, 2, 5, 10, 20, 50 …), for the y axis. */
export function niceCeiling(n) {
  if (n <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= n) return step * power;
  }
  return 10 * power;
}

/**
 * An <svg> line chart of `samples` ([{t, v}], t in seconds) over the last `span` seconds
 * ending at `now`; `kind` picks the colour (a CSS class).
 */
export function lineChart({ samples, now, span, kind, title }) {
  const top = niceCeiling(Math.max(1, ...samples.map((p) => p.v)));
  const x = (t) => PAD.left + ((t - (now - span)) / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const grid = [0, top / 2, top].map((v) => [
    s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
    s("text", { class: "axis", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, formatTick(v)),
  ]);
  const visible = samples.filter((p) => p.t >= now - span);
  const points = visible.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  const area = visible.length
    ? `${x(visible[0].t).toFixed(1)},${y(0)} ${points} ${x(visible[visible.length - 1].t).toFixed(1)},${y(0)}`
    : "";
  const minutes = Math.round(span / 60);
  return s(
    "svg",
    {
      class: `chart ${kind}`,
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": `${title}, last ${minutes} minutes`,
    },
    s("title", {}, title),
    grid,
    s("text", { class: "axis", x: PAD.left, y: H - 6 }, `−${minutes} min`),
    s("text", { class: "axis", x: W - PAD.right, y: H - 6, "text-anchor": "end" }, "now"),
    visible.length > 1 ? s("polygon", { class: "area", points: area }) : null,
    visible.length > 1 ? s("polyline", { class: "line", points }) : null,
    visible.length
      ? s("circle", {
          class: "dot",
          r: 3.5,
          cx: x(visible[visible.length - 1].t),
          cy: y(visible[visible.length - 1].v),
        })
      : null,
  );
}

function formatTick(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

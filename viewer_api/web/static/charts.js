// Inline SVG charts (no library): grouped/stacked bars and a histogram with a deadline line.
const NS = "http://www.w3.org/2000/svg";
const COLOURS = [
  "#2563eb",
  "#16a34a",
  "#d97706",
  "#9333ea",
  "#0891b2",
  "#db2777",
  "#65a30d",
  "#475569",
];

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function svg(width, height, label) {
  return el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": label,
    class: "svg-chart",
  });
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// rows: [{label, parts: {key: value}}]; keys: legend order. A stacked bar per row.
export function stackedBars(rows, keys, { title = "", width = 640, barHeight = 22 } = {}) {
  const left = 150;
  const height = rows.length * (barHeight + 8) + 50;
  const s = svg(width, height, title);
  const max = niceMax(
    Math.max(1, ...rows.map((r) => keys.reduce((a, k) => a + (r.parts[k] || 0), 0))),
  );
  const scale = (width - left - 40) / max;
  rows.forEach((r, i) => {
    const y = 10 + i * (barHeight + 8);
    s.append(
      el(
        "text",
        { x: left - 6, y: y + barHeight * 0.7, "text-anchor": "end", class: "axis" },
        r.label,
      ),
    );
    let x = left;
    keys.forEach((k, j) => {
      const v = r.parts[k] || 0;
      if (!v) return;
      const w = v * scale;
      const rect = el("rect", {
        x,
        y,
        width: Math.max(1, w),
        height: barHeight,
        fill: COLOURS[j % COLOURS.length],
      });
      rect.append(el("title", {}, `${r.label} ${k}: ${v}`));
      s.append(rect);
      if (w > 18)
        s.append(
          el(
            "text",
            { x: x + w / 2, y: y + barHeight * 0.7, "text-anchor": "middle", class: "bar-label" },
            v,
          ),
        );
      x += w;
    });
    const total = keys.reduce((a, k) => a + (r.parts[k] || 0), 0);
    s.append(el("text", { x: x + 4, y: y + barHeight * 0.7, class: "axis" }, total));
  });
  const ly = height - 16;
  keys.forEach((k, j) => {
    s.append(
      el("rect", {
        x: left + j * 90,
        y: ly - 10,
        width: 12,
        height: 12,
        fill: COLOURS[j % COLOURS.length],
      }),
    );
    s.append(el("text", { x: left + j * 90 + 16, y: ly, class: "axis" }, k));
  });
  return s;
}

// buckets: [{from_minutes, count}] (the last is open-ended); deadline in minutes drawn as a line.
export function histogram(
  buckets,
  deadline,
  {
    title = "",
    width = 320,
    height = 200,
    colour = "#2563eb",
    deadlineLabel = "deadline",
    deadlineText = (minutes) => minutes,
  } = {},
) {
  const s = svg(width, height, title);
  const pad = { l: 30, r: 10, t: 24, b: 36 };
  const n = buckets.length;
  const bw = (width - pad.l - pad.r) / n;
  const max = niceMax(Math.max(1, ...buckets.map((b) => b.count)));
  const ph = height - pad.t - pad.b;
  s.append(el("text", { x: pad.l, y: 14, class: "chart-title" }, title));
  s.append(
    el("line", {
      x1: pad.l,
      y1: pad.t + ph,
      x2: width - pad.r,
      y2: pad.t + ph,
      class: "axis-line",
    }),
  );
  s.append(el("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", class: "axis" }, max));
  buckets.forEach((b, i) => {
    const h = (b.count / max) * ph;
    const x = pad.l + i * bw;
    const next = buckets[i + 1];
    const rect = el("rect", {
      x: x + 1,
      y: pad.t + ph - h,
      width: Math.max(1, bw - 2),
      height: h,
      fill: colour,
    });
    rect.append(
      el("title", {}, `${b.from_minutes}${next ? "–" + next.from_minutes : "+"}: ${b.count}`),
    );
    s.append(rect);
    if (i % 2 === 0 || n < 8) {
      s.append(
        el(
          "text",
          { x, y: pad.t + ph + 14, "text-anchor": "middle", class: "axis small" },
          b.from_minutes,
        ),
      );
    }
  });
  // deadline: position within its bucket, linearly between the bucket edges
  let dx = null;
  for (let i = 0; i < n; i++) {
    const lo = buckets[i].from_minutes;
    const hi = buckets[i + 1] ? buckets[i + 1].from_minutes : null;
    if (deadline >= lo && (hi === null || deadline < hi)) {
      const frac = hi === null ? 0.1 : (deadline - lo) / (hi - lo);
      dx = pad.l + (i + frac) * bw;
    }
  }
  if (dx !== null) {
    s.append(el("line", { x1: dx, y1: pad.t - 4, x2: dx, y2: pad.t + ph, class: "deadline-line" }));
    // right of the line, or left of it in the chart's right half: never cut off
    const right = dx > pad.l + (width - pad.l - pad.r) / 2;
    s.append(
      el(
        "text",
        {
          x: right ? dx - 3 : dx + 3,
          y: pad.t + 6,
          "text-anchor": right ? "end" : "start",
          class: "deadline-label",
        },
        `${deadlineLabel} ${deadlineText(deadline)}`,
      ),
    );
  }
  return s;
}

// series per day: rows [{day, key: count}], stacked columns.
export function dayColumns(
  rows,
  keys,
  { title = "", width = 640, height = 180, colours = COLOURS, labels = keys } = {},
) {
  const s = svg(width, height, title);
  const pad = { l: 30, r: 10, t: 10, b: 30 };
  const n = Math.max(1, rows.length);
  const bw = Math.min(40, (width - pad.l - pad.r - 120) / n);
  keys.forEach((k, j) => {
    const ly = pad.t + 12 + j * 16;
    s.append(
      el("rect", {
        x: width - 110,
        y: ly - 10,
        width: 12,
        height: 12,
        fill: colours[j % colours.length],
      }),
    );
    s.append(el("text", { x: width - 94, y: ly, class: "axis" }, labels[j]));
  });
  const ph = height - pad.t - pad.b;
  const max = niceMax(Math.max(1, ...rows.map((r) => keys.reduce((a, k) => a + (r[k] || 0), 0))));
  s.append(el("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", class: "axis" }, max));
  rows.forEach((r, i) => {
    let y = pad.t + ph;
    keys.forEach((k, j) => {
      const h = ((r[k] || 0) / max) * ph;
      if (!h) return;
      y -= h;
      const rect = el("rect", {
        x: pad.l + i * bw + 1,
        y,
        width: Math.max(1, bw - 2),
        height: h,
        fill: colours[j % colours.length],
      });
      rect.append(el("title", {}, `${r.day} ${labels[j]}: ${r[k]}`));
      s.append(rect);
    });
    if (i === 0 || i === rows.length - 1) {
      s.append(
        el(
          "text",
          {
            x: pad.l + i * bw + bw / 2,
            y: height - 12,
            "text-anchor": "middle",
            class: "axis small",
          },
          r.day.slice(5),
        ),
      );
    }
  });
  return s;
}

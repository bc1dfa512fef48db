// The quick viewer: series thumbnails; scroll (wheel, arrow keys); window (drag, presets for
// the modality and body part, the active one highlighted); zoom, pan and fit; the value
// under the cursor (HU on a CT); orientation letters from Image Orientation; corner text.
// Images are decoded here (native little-endian data); compressed ones are drawn from the
// server's DICOMweb /rendered (no value under the cursor for those).
import { api, errorText } from "./api.js";
import { defaultWindow, orientationLabels, parseDicom, renderToImageData } from "./dicom.js";
import { fmtDate, t } from "./i18n.js";

// [string key, center, width]
const CT_PRESETS = {
  head: [
    ["brain", 40, 80],
    ["stroke_w", 40, 40],
    ["subdural", 75, 215],
    ["bone", 400, 1800],
  ],
  chest: [
    ["lung", -600, 1500],
    ["mediastinum", 50, 350],
    ["angio", 300, 600],
    ["bone", 400, 1800],
  ],
  abdomen: [
    ["abdomen", 40, 400],
    ["liver", 60, 160],
    ["bone", 400, 1800],
  ],
  other: [
    ["brain", 40, 80],
    ["lung", -600, 1500],
    ["mediastinum", 50, 350],
    ["abdomen", 40, 400],
    ["bone", 400, 1800],
  ],
};
const REGIONS = {
  head: ["HEAD", "BRAIN", "SKULL", "NECK"],
  chest: ["CHEST", "THORAX", "LUNG", "HEART", "AORTA", "CHESTABDOMEN"],
  abdomen: ["ABDOMEN", "PELVIS", "LIVER", "ABDOMENPELVIS"],
};
const PRELOAD_CONCURRENCY = 4;
const MIN_ZOOM = 0.25;
const MAX_ZOOM = 16;

// The window presets for a series: HU presets for a CT by body part, none for the others
// (their own window, "default", is what fits them).
export function presetsFor(modality, bodyPart) {
  if (modality !== "CT") return [];
  const part = (bodyPart || "").toUpperCase().replace(/[^A-Z]/g, "");
  const region = Object.keys(REGIONS).find((r) => REGIONS[r].includes(part)) || "other";
  return CT_PRESETS[region];
}

export class Viewer {
  // `root` holds the parts, each marked data-v="..." (stage, image, thumbs, presets...): the
  // reading page has one such pane, two when a prior study is shown beside the current one
  constructor(root, study) {
    this.root = root;
    this.study = study;
    this.stage = root.querySelector('[data-v="stage"]');
    this.canvas = root.querySelector('[data-v="image"]');
    this.ctx = this.canvas.getContext("2d");
    this.info = root.querySelector('[data-v="slice-index"]');
    this.wlInfo = root.querySelector('[data-v="wl-info"]');
    this.note = root.querySelector('[data-v="viewer-note"]');
    this.thumbs = root.querySelector('[data-v="thumbs"]');
    this.series = study.series.filter((s) => s.sop_instance_uids.length > 0);
    this.cache = new Map(); // sop uid -> Promise<image>
    this.frame = document.createElement("canvas"); // the current image, windowed, 1:1
    this.image = null;
    this.seriesIndex = 0;
    this.index = 0;
    this.window = null;
    this.userWindow = false;
    this.tool = "window";
    this.view = { zoom: 1, cx: null, cy: null }; // zoom 1 fits; (cx, cy) at the centre
    this.renderedAvailable = null;
    this.bind();
    this.drawTools();
    this.drawPresets();
  }

  get sops() {
    return this.series[this.seriesIndex]?.sop_instance_uids || [];
  }

  get currentSeries() {
    return this.series[this.seriesIndex];
  }

  get presets() {
    const s = this.currentSeries;
    return s ? presetsFor(s.modality, s.body_part_examined) : [];
  }

  async start() {
    new ResizeObserver(() => this.resize()).observe(this.stage);
    this.resize();
    if (!this.series.length) {
      this.note.textContent = t("no_image");
      return;
    }
    this.drawThumbs();
    await this.showSeries(0);
  }

  // --- input ------------------------------------------------------------------------------
  bind() {
    this.canvas.tabIndex = 0;
    this.canvas.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        if (e.ctrlKey) this.zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.offsetX, e.offsetY);
        else this.step(e.deltaY > 0 ? 1 : -1);
      },
      { passive: false },
    );
    this.root.addEventListener("keydown", (e) => this.key(e));
    this.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    this.canvas.addEventListener("dblclick", () => this.fit());
    let drag = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      // left: the chosen tool; middle or shift: pan; right or ctrl: zoom
      let tool = this.tool;
      if (e.button === 1 || e.shiftKey) tool = "pan";
      else if (e.button === 2 || e.ctrlKey) tool = "zoom";
      if (tool === "window" && !this.window) return;
      drag = { tool, x: e.clientX, y: e.clientY, window: this.window, view: { ...this.view } };
      this.canvas.setPointerCapture(e.pointerId);
      this.canvas.focus();
    });
    this.canvas.addEventListener("pointermove", (e) => {
      this.probe(e.offsetX, e.offsetY);
      if (drag) this.dragTo(drag, e);
    });
    this.canvas.addEventListener("pointerleave", () => this.probe(null, null));
    const end = () => {
      drag = null;
    };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
  }

  key(e) {
    if (e.target.closest("textarea, input, select")) return;
    const moves = {
      ArrowDown: 1,
      ArrowRight: 1,
      PageDown: 5,
      ArrowUp: -1,
      ArrowLeft: -1,
      PageUp: -5,
    };
    if (e.key in moves) {
      e.preventDefault();
      this.step(moves[e.key]);
    } else if (e.key === "Home") {
      e.preventDefault();
      this.go(0);
    } else if (e.key === "End") {
      e.preventDefault();
      this.go(this.sops.length - 1);
    } else if (/^[1-9]$/.test(e.key)) {
      this.preset(Number(e.key) - 1);
    } else if (e.key === "0" || e.key === "f") {
      this.fit();
    } else if (e.key === "+" || e.key === "=") {
      this.zoomAt(1.25);
    } else if (e.key === "-") {
      this.zoomAt(0.8);
    }
  }

  dragTo(drag, e) {
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (drag.tool === "window") {
      // a step per pixel that suits the image's range (HU, or 12-bit radiograph values)
      const unit = Math.max(1, drag.window.width / 200);
      const width = Math.max(1, drag.window.width + dx * 2 * unit);
      this.setWindow(drag.window.center + dy * 2 * unit, width);
    } else if (drag.tool === "pan") {
      const scale = this.scale();
      const dpr = window.devicePixelRatio || 1;
      this.view.cx = drag.view.cx - (dx * dpr) / scale;
      this.view.cy = drag.view.cy - (dy * dpr) / scale;
      this.paint();
    } else {
      this.view.zoom = clamp(drag.view.zoom * Math.exp(-dy / 150), MIN_ZOOM, MAX_ZOOM);
      this.paint();
    }
  }

  // --- the view (zoom, pan) ---------------------------------------------------------------
  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.stage.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.stage.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
      this.paint();
    }
  }

  fitScale() {
    if (!this.frame.width) return 1;
    return Math.min(this.canvas.width / this.frame.width, this.canvas.height / this.frame.height);
  }

  scale() {
    return this.fitScale() * this.view.zoom;
  }

  fit() {
    this.view = { zoom: 1, cx: this.frame.width / 2, cy: this.frame.height / 2 };
    this.paint();
  }

  // zoom by `factor`, keeping the image point under (x, y) (CSS pixels) where it is
  zoomAt(factor, x = null, y = null) {
    const dpr = window.devicePixelRatio || 1;
    const before = this.scale();
    const zoom = clamp(this.view.zoom * factor, MIN_ZOOM, MAX_ZOOM);
    if (x !== null) {
      const px = (x * dpr - this.canvas.width / 2) / before + this.view.cx;
      const py = (y * dpr - this.canvas.height / 2) / before + this.view.cy;
      const after = this.fitScale() * zoom;
      this.view.cx = px - (x * dpr - this.canvas.width / 2) / after;
      this.view.cy = py - (y * dpr - this.canvas.height / 2) / after;
    }
    this.view.zoom = zoom;
    this.paint();
  }

  // the image pixel under (x, y) (CSS pixels of the canvas), or null outside the image
  imagePoint(x, y) {
    const dpr = window.devicePixelRatio || 1;
    const s = this.scale();
    const col = Math.floor((x * dpr - this.canvas.width / 2) / s + this.view.cx);
    const row = Math.floor((y * dpr - this.canvas.height / 2) / s + this.view.cy);
    if (col < 0 || row < 0 || col >= this.frame.width || row >= this.frame.height) return null;
    return { col, row };
  }

  // the stored value at (x, y) through the modality LUT: HU on a CT
  probe(x, y) {
    const el = this.root.querySelector('[data-v="probe"]');
    const img = this.image;
    const point = x === null || !img || img.compressed ? null : this.imagePoint(x, y);
    if (!point || img.samples !== 1) {
      el.textContent = "";
      delete el.dataset.value;
      return;
    }
    const value = img.pixels[point.row * img.columns + point.col] * img.slope + img.intercept;
    const shown = Number.isInteger(value) ? value : value.toFixed(1);
    const unit = img.modality === "CT" ? " HU" : "";
    el.textContent = `${t(img.modality === "CT" ? "ct_value" : "pixel_value")} ${shown}${unit}`;
    el.dataset.value = String(value);
    el.dataset.col = String(point.col);
    el.dataset.row = String(point.row);
  }

  paint() {
    const { ctx, canvas } = this;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!this.frame.width) return;
    if (this.view.cx === null) this.fit();
    const s = this.scale();
    ctx.imageSmoothingEnabled = s < 3;
    const ox = canvas.width / 2 - this.view.cx * s;
    const oy = canvas.height / 2 - this.view.cy * s;
    ctx.setTransform(s, 0, 0, s, ox, oy);
    ctx.drawImage(this.frame, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    canvas.dataset.zoom = this.view.zoom.toFixed(2);
    canvas.dataset.center = `${this.view.cx.toFixed(1)},${this.view.cy.toFixed(1)}`;
    this.updateInfo();
  }

  // --- tools and presets ------------------------------------------------------------------
  drawTools() {
    const box = this.root.querySelector('[data-v="tools"]');
    box.replaceChildren();
    for (const [tool, key] of [
      ["window", "tool_window"],
      ["pan", "tool_pan"],
      ["zoom", "tool_zoom"],
    ]) {
      const b = button(t(key), () => {
        this.tool = tool;
        this.drawTools();
      });
      b.dataset.tool = tool;
      b.classList.toggle("active", this.tool === tool);
      b.setAttribute("aria-pressed", String(this.tool === tool));
      box.append(b);
    }
    const fit = button(t("fit"), () => this.fit());
    fit.dataset.tool = "fit";
    fit.title = "F";
    box.append(fit);
  }

  drawPresets() {
    const box = this.root.querySelector('[data-v="presets"]');
    box.replaceChildren();
    this.presets.forEach(([key, c, w], i) => {
      const b = button(`${t(key)} ${c}/${w}`, () => this.preset(i));
      b.title = `${i + 1}`;
      b.dataset.preset = key;
      box.append(b);
    });
    const reset = button(t("reset"), () => {
      this.userWindow = false;
      this.window = null;
      this.draw();
    });
    reset.dataset.preset = "default";
    box.append(reset);
    this.markPreset();
  }

  // highlight the preset the window is on ("default": the image's own)
  markPreset() {
    const w = this.window;
    for (const b of this.root.querySelectorAll('[data-v="presets"] button')) {
      const p = this.presets.find(([key]) => key === b.dataset.preset);
      const on = p
        ? Boolean(w && this.userWindow && w.center === p[1] && w.width === p[2])
        : !this.userWindow;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", String(on));
    }
  }

  preset(i) {
    const p = this.presets[i];
    if (!p) return;
    this.setWindow(p[1], p[2]);
  }

  setWindow(center, width) {
    this.userWindow = true;
    this.window = { center: Math.round(center), width: Math.round(width) };
    this.draw();
  }

  // --- series and slices ------------------------------------------------------------------
  drawThumbs() {
    this.thumbs.replaceChildren();
    this.series.forEach((s, i) => {
      const fig = document.createElement("figure");
      fig.className = "thumb";
      fig.dataset.series = String(i);
      const c = document.createElement("canvas");
      c.width = 96;
      c.height = 96;
      const cap = document.createElement("figcaption");
      const label = s.series_description || s.modality;
      cap.textContent = `${s.series_number ?? ""} ${label} (${s.sop_instance_uids.length})`;
      fig.append(c, cap);
      fig.addEventListener("click", () => this.showSeries(i));
      this.thumbs.append(fig);
      const middle = s.sop_instance_uids[Math.floor(s.sop_instance_uids.length / 2)];
      this.load(s, middle)
        .then((img) => this.drawThumb(c, img, s))
        .catch(() => {});
    });
  }

  async drawThumb(canvas, img, series) {
    const w = defaultWindow(img);
    let source;
    if (img.compressed) source = await this.fetchRendered(series, img.sop, w.center, w.width);
    else source = windowed(img, w);
    if (!source) return;
    const ctx = canvas.getContext("2d");
    const s = Math.min(canvas.width / source.width, canvas.height / source.height);
    const dw = source.width * s;
    const dh = source.height * s;
    ctx.drawImage(source, (canvas.width - dw) / 2, (canvas.height - dh) / 2, dw, dh);
  }

  async showSeries(i) {
    const changed = i !== this.seriesIndex || this.image === null;
    this.seriesIndex = i;
    for (const f of this.thumbs.querySelectorAll(".thumb")) {
      f.classList.toggle("current", f.dataset.series === String(i));
    }
    this.index = 0;
    if (changed) {
      this.userWindow = false;
      this.window = null;
      this.view = { zoom: 1, cx: null, cy: null };
      this.drawPresets();
    }
    await this.draw();
    this.preload();
  }

  // fetch + decode one instance (cached); server rendering for what the browser cannot decode
  load(series, sop) {
    if (!this.cache.has(sop)) {
      const url = `/api/v1/studies/${this.study.study_instance_uid}/instances/${sop}`;
      const p = (async () => {
        const r = await api(url, { raw: true });
        const img = parseDicom(await r.arrayBuffer());
        img.series = series.series_instance_uid;
        img.sop = sop;
        return img;
      })();
      this.cache.set(sop, p);
      p.catch(() => this.cache.delete(sop));
    }
    return this.cache.get(sop);
  }

  async preload() {
    const series = this.currentSeries;
    const queue = [...series.sop_instance_uids];
    const worker = async () => {
      while (queue.length && this.currentSeries === series) {
        try {
          await this.load(series, queue.shift());
        } catch {
          // shown when displayed
        }
      }
    };
    await Promise.all(Array.from({ length: PRELOAD_CONCURRENCY }, worker));
  }

  step(delta) {
    this.go(this.index + delta);
  }

  go(i) {
    const n = this.sops.length;
    if (!n) return;
    const next = Math.min(n - 1, Math.max(0, i));
    if (next === this.index && this.drawn === this.sops[next]) return;
    this.index = next;
    this.draw();
  }

  // --- text on the image ------------------------------------------------------------------
  // the language changed: redraw what has words
  relabel() {
    this.drawTools();
    this.drawPresets();
    this.updateInfo();
    if (this.image) this.drawCorners(this.image);
  }

  updateInfo() {
    const n = this.sops.length;
    this.info.textContent = n > 1 ? `${t("slice")} ${this.index + 1} / ${n}` : "";
    this.info.dataset.index = String(this.index + 1);
    this.info.dataset.count = String(n);
    if (this.window) {
      this.wlInfo.textContent = `${t("window")} ${this.window.center} / ${this.window.width}`;
    }
    const zoom = this.root.querySelector('[data-v="zoom-info"]');
    zoom.textContent = `${t("zoom")} ${Math.round(this.view.zoom * 100)}%`;
    this.markPreset();
  }

  drawCorners(img) {
    const study = this.study;
    const series = this.currentSeries;
    const set = (id, lines) => {
      const el = this.root.querySelector(`[data-v="${id}"]`);
      el.replaceChildren(...lines.filter(Boolean).map((l) => div(l)));
    };
    const who = [study.patient_name, study.patient_sex, study.patient_age].filter(Boolean);
    set("corner-tl", [
      who.join(" "),
      study.patient_id && `ID ${study.patient_id}`,
      formatDate(study.study_date),
    ]);
    set("corner-tr", [
      study.site,
      `${series.modality} S${series.series_number ?? ""} ${series.series_description || ""}`,
      img.instanceNumber !== null && `${t("image_number")} ${img.instanceNumber}`,
    ]);
    set("corner-bl-text", [
      typeof img.sliceLocation === "number" &&
        `${t("slice_location")} ${img.sliceLocation.toFixed(1)} mm`,
      typeof img.sliceThickness === "number" &&
        `${t("slice_thickness")} ${img.sliceThickness} mm`,
    ]);
    const labels = orientationLabels(img);
    for (const side of ["left", "right", "top", "bottom"]) {
      const el = this.root.querySelector(`[data-v="orient-${side}"]`);
      el.textContent = labels ? labels[side] : "";
    }
  }

  // --- drawing ----------------------------------------------------------------------------
  async draw() {
    const series = this.currentSeries;
    const sop = this.sops[this.index];
    const token = (this.drawToken = (this.drawToken || 0) + 1);
    this.updateInfo();
    let img;
    try {
      img = await this.load(series, sop);
    } catch (err) {
      this.note.textContent = errorText(err);
      return;
    }
    if (token !== this.drawToken) return; // a newer slice was asked for meanwhile
    if (!this.userWindow || !this.window) {
      const w = defaultWindow(img);
      this.window = { center: Math.round(w.center), width: Math.round(w.width) };
    }
    let source;
    if (img.compressed) {
      source = await this.fetchRendered(series, sop, this.window.center, this.window.width);
      if (token !== this.drawToken) return;
      this.note.textContent = source ? t("cannot_decode") : t("not_available");
      if (!source) return;
    } else {
      source = windowed(img, this.window);
      this.note.textContent = "";
    }
    const sameSize = this.frame.width === source.width && this.frame.height === source.height;
    this.frame.width = source.width;
    this.frame.height = source.height;
    this.frame.getContext("2d").drawImage(source, 0, 0);
    if (!sameSize) this.view = { zoom: 1, cx: null, cy: null };
    this.image = img;
    this.drawCorners(img);
    this.paint();
    this.drawn = sop;
    this.canvas.dataset.drawn = sop;
  }

  // the server's rendering of an instance (DICOMweb /rendered) as a bitmap; null if the
  // server cannot render it
  async fetchRendered(series, sop, center, width) {
    if (this.renderedAvailable === false) return null;
    const url =
      `/dicomweb/studies/${this.study.study_instance_uid}/series/${series.series_instance_uid}` +
      `/instances/${sop}/rendered?window=${center},${width},linear`;
    try {
      const r = await api(url, { raw: true });
      return await createImageBitmap(await r.blob());
    } catch (err) {
      if (err.status === 404 || err.status === 405) this.renderedAvailable = false;
      return null;
    }
  }
}

// the image through `window`, as a canvas of its own size
function windowed(img, window) {
  const c = document.createElement("canvas");
  c.width = img.columns;
  c.height = img.rows;
  const ctx = c.getContext("2d");
  const data = ctx.createImageData(img.columns, img.rows);
  ctx.putImageData(renderToImageData(img, window.center, window.width, data), 0, 0);
  return c;
}

function button(text, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onclick);
  return b;
}

function div(text) {
  const d = document.createElement("div");
  d.textContent = text;
  return d;
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

// "20261125" -> a date in the reader's language
function formatDate(da) {
  if (!/^\d{8}$/.test(da || "")) return da || "";
  const iso = `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}T12:00:00`;
  return fmtDate(iso);
}

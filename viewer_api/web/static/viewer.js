// The image viewer: series thumbnails, scroll with the wheel and arrow keys, window/level
// presets and drag. Images are decoded here (native little-endian data); compressed ones
// are rendered by the server's DICOMweb /rendered endpoint when it exists.
import { api, errorText } from "./api.js";
import { defaultWindow, parseDicom, renderToImageData } from "./dicom.js";
import { t } from "./i18n.js";

export const PRESETS = [
  ["brain", 40, 80],
  ["stroke_w", 40, 40],
  ["subdural", 75, 215],
  ["lung", -600, 1500],
  ["mediastinum", 50, 350],
  ["bone", 400, 1800],
];
const PRELOAD_CONCURRENCY = 4;

export class Viewer {
  constructor(root, study) {
    this.root = root;
    this.study = study;
    this.canvas = root.querySelector("#image");
    this.ctx = this.canvas.getContext("2d");
    this.info = root.querySelector("#slice-index");
    this.wlInfo = root.querySelector("#wl-info");
    this.note = root.querySelector("#viewer-note");
    this.thumbs = root.querySelector("#thumbs");
    this.series = study.series.filter((s) => s.sop_instance_uids.length > 0);
    this.cache = new Map(); // sop uid -> Promise<image>
    this.seriesIndex = 0;
    this.index = 0;
    this.window = null;
    this.userWindow = false;
    this.renderedAvailable = null;
    this.bind();
    this.drawPresets();
  }

  get sops() {
    return this.series[this.seriesIndex]?.sop_instance_uids || [];
  }

  async start() {
    if (!this.series.length) {
      this.note.textContent = t("no_image");
      return;
    }
    this.drawThumbs();
    await this.showSeries(0);
  }

  bind() {
    this.canvas.tabIndex = 0;
    this.canvas.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.step(e.deltaY > 0 ? 1 : -1);
      },
      { passive: false },
    );
    this.root.addEventListener("keydown", (e) => {
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
      } else if (/^[1-6]$/.test(e.key)) this.preset(Number(e.key) - 1);
    });
    let drag = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      if (!this.window) return;
      drag = { x: e.clientX, y: e.clientY, ...this.window };
      this.canvas.setPointerCapture(e.pointerId);
      this.canvas.focus();
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const width = Math.max(1, drag.width + (e.clientX - drag.x) * 2);
      const center = drag.center + (e.clientY - drag.y) * 2;
      this.setWindow(center, width);
    });
    const end = () => {
      drag = null;
    };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
  }

  drawPresets() {
    const box = this.root.querySelector("#presets");
    box.replaceChildren();
    PRESETS.forEach(([key, c, w], i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `${t(key)} ${c}/${w}`;
      b.title = `${i + 1}`;
      b.dataset.preset = key;
      b.addEventListener("click", () => this.preset(i));
      box.append(b);
    });
    const reset = document.createElement("button");
    reset.type = "button";
    reset.textContent = t("reset");
    reset.dataset.preset = "default";
    reset.addEventListener("click", () => {
      this.userWindow = false;
      this.window = null;
      this.draw();
    });
    box.append(reset);
  }

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
    const small = document.createElement("canvas");
    if (img.compressed) {
      const w = defaultWindow(img);
      const bitmap = await this.fetchRendered(series, img.sop, w.center, w.width);
      if (bitmap) canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return;
    }
    small.width = img.columns;
    small.height = img.rows;
    const sctx = small.getContext("2d");
    const w = defaultWindow(img);
    sctx.putImageData(
      renderToImageData(img, w.center, w.width, sctx.createImageData(img.columns, img.rows)),
      0,
      0,
    );
    canvas.getContext("2d").drawImage(small, 0, 0, canvas.width, canvas.height);
  }

  async showSeries(i) {
    this.seriesIndex = i;
    for (const f of this.thumbs.querySelectorAll(".thumb"))
      f.classList.toggle("current", f.dataset.series === String(i));
    this.index = 0;
    await this.draw();
    this.preload();
  }

  // fetch + decode one instance (cached); server rendering for what the browser cannot decode
  load(series, sop) {
    if (!this.cache.has(sop)) {
      const p = (async () => {
        const r = await api(`/api/v1/studies/${this.study.study_instance_uid}/instances/${sop}`, {
          raw: true,
        });
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
    const series = this.series[this.seriesIndex];
    const queue = [...series.sop_instance_uids];
    const worker = async () => {
      while (queue.length && this.series[this.seriesIndex] === series) {
        try {
          await this.load(series, queue.shift());
        } catch {
          /* shown when displayed */
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

  preset(i) {
    const [, c, w] = PRESETS[i];
    this.userWindow = true;
    this.setWindow(c, w);
  }

  setWindow(center, width) {
    this.userWindow = true;
    this.window = { center: Math.round(center), width: Math.round(width) };
    this.draw();
  }

  updateInfo() {
    const n = this.sops.length;
    this.info.textContent = `${t("slice")} ${this.index + 1} / ${n}`;
    this.info.dataset.index = String(this.index + 1);
    this.info.dataset.count = String(n);
    if (this.window)
      this.wlInfo.textContent = `${t("window")} ${this.window.center} / ${this.window.width}`;
  }

  async draw() {
    const series = this.series[this.seriesIndex];
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
    if (!this.userWindow || !this.window) this.window = defaultWindow(img);
    if (img.compressed) await this.drawRendered(series, sop);
    else {
      if (this.canvas.width !== img.columns || this.canvas.height !== img.rows) {
        this.canvas.width = img.columns;
        this.canvas.height = img.rows;
      }
      const data = this.ctx.createImageData(img.columns, img.rows);
      this.ctx.putImageData(
        renderToImageData(img, this.window.center, this.window.width, data),
        0,
        0,
      );
      this.note.textContent = "";
    }
    this.drawn = sop;
    this.canvas.dataset.drawn = sop;
    this.updateInfo();
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

  async drawRendered(series, sop) {
    const bitmap = await this.fetchRendered(series, sop, this.window.center, this.window.width);
    if (!bitmap) {
      this.note.textContent = t("not_available");
      return;
    }
    this.canvas.width = bitmap.width;
    this.canvas.height = bitmap.height;
    this.ctx.drawImage(bitmap, 0, 0);
    this.note.textContent = t("cannot_decode");
  }
}

// A drawing pad: pointer events (mouse, pen with pressure, touch), dark ink on white paper,
// plus dropping or choosing a picture, which is shown in the pad and sent as it is.

import { h } from "./dom.js";

export class DrawingPad {
  // `onChange({picture, drawing})` fires while drawing (throttled by the caller) and on drop.
  constructor({ width, height, ink, label, onChange }) {
    this.width = width;
    this.height = height;
    this.ink = ink; // stroke width in CSS pixels
    this.onChange = onChange;
    this.dirty = false;
    this.dropped = null;
    this.version = 0; // counts changes: an answer names the version of the input it is for
    this.canvas = h("canvas", { class: "pad-canvas", width, height,
                                "aria-label": label, role: "img" });
    this.canvas.width = width * 2; // drawn at twice the size: crisp on dense screens
    this.canvas.height = height * 2;
    this.context = this.canvas.getContext("2d");
    this.hint = h("div", { class: "pad-hint" }, label);
    this.fileInput = h("input", { type: "file", accept: "image/png,image/jpeg,image/*",
                                  class: "visually-hidden", "aria-label": "choose a picture" });
    this.element = h("div", { class: "pad", dataset: { empty: "true" } }, this.canvas, this.hint);
    this.clear(false);
    this.bind();
  }

  bind() {
    const canvas = this.canvas;
    let drawing = null;
    const point = (event) => {
      const box = canvas.getBoundingClientRect();
      return { x: ((event.clientX - box.left) / box.width) * canvas.width,
               y: ((event.clientY - box.top) / box.height) * canvas.height,
               pressure: event.pointerType === "pen" && event.pressure > 0 ? event.pressure : 0.5 };
    };
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 && event.pointerType === "mouse") return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      if (this.dropped) this.clear(false);
      drawing = { id: event.pointerId, last: point(event) };
      this.stroke(drawing.last, drawing.last);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing || event.pointerId !== drawing.id) return;
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const each of events.length ? events : [event]) {
        const next = point(each);
        this.stroke(drawing.last, next);
        drawing.last = next;
      }
      this.changed(true);
    });
    const finish = (event) => {
      if (!drawing || event.pointerId !== drawing.id) return;
      drawing = null;
      this.changed(false);
    };
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", finish);

    const zone = this.element;
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      const file = [...(event.dataTransfer?.files || [])][0];
      if (file) this.showPicture(file);
    });
    this.fileInput.addEventListener("change", () => {
      const file = this.fileInput.files[0];
      if (file) this.showPicture(file);
      this.fileInput.value = "";
    });
  }

  stroke(from, to) {
    const context = this.context;
    const pressure = (from.pressure + to.pressure) / 2;
    context.lineWidth = this.ink * 2 * (0.6 + 0.8 * pressure);
    context.lineCap = "round";
    context.lineJoin = "round";
    context.strokeStyle = "#111827";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x + 0.01, to.y);
    context.stroke();
    this.dirty = true;
    this.bump();
    this.element.dataset.empty = "false";
  }

  clear(notify = true) {
    this.context.fillStyle = "#ffffff";
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.dirty = false;
    this.dropped = null;
    this.bump();
    this.element.dataset.empty = "true";
    if (notify) this.onChange(null);
  }

  async showPicture(file) {
    this.clear(false);
    this.dropped = file;
    this.bump();
    this.element.dataset.empty = "false";
    try {
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(this.canvas.width / bitmap.width, this.canvas.height / bitmap.height);
      const w = bitmap.width * scale;
      const hgt = bitmap.height * scale;
      this.context.drawImage(bitmap, (this.canvas.width - w) / 2, (this.canvas.height - hgt) / 2,
                             w, hgt);
    } catch {
      // Not a picture the browser can show: the service will say what it thinks of it.
    }
    this.onChange({ picture: file, drawing: false });
  }

  bump() {
    this.version += 1;
    this.element.dataset.version = String(this.version);
  }

  changed(drawing) {
    if (!this.dirty) return;
    this.onChange({ picture: null, drawing });
  }

  // The drawing as a PNG (the dropped file itself when one was dropped).
  picture() {
    if (this.dropped) return Promise.resolve(this.dropped);
    return new Promise((resolve) => this.canvas.toBlob(resolve, "image/png"));
  }
}

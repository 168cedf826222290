// Sparkline draws a few series (rates over the last samples) on a small
// canvas: one line per series, scaled to the largest value shown.
const COLORS = ["#2563eb", "#dc2626", "#16a34a"];

export class Sparkline {
  constructor(canvas, labels) {
    this.canvas = canvas;
    this.labels = labels;
    canvas.title = labels.map((l, i) => `${["blue", "red", "green"][i]}: ${l}`).join(", ");
  }

  // draw takes points: [[a, b], [a, b], ...], oldest first.
  draw(points) {
    const c = this.canvas.getContext("2d");
    if (!c) return;
    const w = this.canvas.width;
    const h = this.canvas.height;
    c.clearRect(0, 0, w, h);
    c.strokeStyle = "#e5e7eb";
    c.beginPath();
    c.moveTo(0, h - 0.5);
    c.lineTo(w, h - 0.5);
    c.stroke();
    if (points.length < 2) return;
    let top = 0;
    for (const p of points) for (const v of p) top = Math.max(top, v);
    if (top === 0) top = 1;
    const n = points[0].length;
    for (let s = 0; s < n; s++) {
      c.strokeStyle = COLORS[s % COLORS.length];
      c.lineWidth = 1.5;
      c.beginPath();
      points.forEach((p, i) => {
        const x = (i / (points.length - 1)) * (w - 2) + 1;
        const y = h - 2 - (p[s] / top) * (h - 4);
        if (i === 0) c.moveTo(x, y);
        else c.lineTo(x, y);
      });
      c.stroke();
    }
  }
}

/**
 * A dependency-free SVG line chart for loss curves.
 *
 * @module
 */

/** One named curve of (x, y) points. */
export interface Series {
  /** Legend label. */
  label: string;
  /** Points in x order. */
  points: readonly (readonly [number, number])[];
  /** Stroke colour (CSS). */
  color: string;
  /** `line` (default) joins the points; `points` marks each with a dot (a scatter plot). */
  style?: "line" | "points";
}

/** Options for {@link lineChart}. */
export interface ChartOptions {
  /** Title above the plot. */
  title: string;
  /** x-axis label. */
  xLabel: string;
  /** y-axis label. */
  yLabel: string;
  /** Horizontal reference lines (e.g. a baseline). */
  hlines?: readonly { y: number; label: string }[];
}

const W = 640, H = 400, L = 60, R = 20, T = 40, B = 50;

function ticks(lo: number, hi: number, count = 5): number[] {
  const step = (hi - lo) / (count - 1 || 1);
  return Array.from({ length: count }, (_, i) => lo + i * step);
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/**
 * Renders the series as an SVG document.
 *
 * @example
 * ```ts
 * import { lineChart } from "@lowp/recipes";
 * const svg = lineChart([{ label: "train", color: "#1f77b4", points: [[0, 3], [10, 2]] }], {
 *   title: "loss", xLabel: "step", yLabel: "nats/byte",
 * });
 * console.assert(svg.startsWith("<svg"));
 * ```
 */
export function lineChart(series: readonly Series[], opts: ChartOptions): string {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = [...series.flatMap((s) => s.points.map((p) => p[1])), ...(opts.hlines ?? []).map((h) => h.y)]
    .filter(Number.isFinite);
  const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, 1);
  const yPad = (Math.max(...ys) - Math.min(...ys)) * 0.05 || 1;
  const y0 = Math.min(...ys) - yPad, y1 = Math.max(...ys) + yPad;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`,
    `<text x="${W / 2}" y="${H - 10}" text-anchor="middle">${esc(opts.xLabel)}</text>`,
    `<text x="14" y="${H / 2}" text-anchor="middle" transform="rotate(-90 14 ${H / 2})">${esc(opts.yLabel)}</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`,
  ];
  for (const y of ticks(y0, y1)) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eee"/>`);
    parts.push(`<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end">${y.toFixed(2)}</text>`);
  }
  for (const x of ticks(x0, x1)) {
    const label = x1 - x0 >= 10 ? String(Math.round(x)) : x.toFixed(2); // steps are integers; a narrow axis is not
    parts.push(`<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle">${label}</text>`);
  }
  for (const h of opts.hlines ?? []) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(h.y)}" y2="${sy(h.y)}" stroke="#999" stroke-dasharray="5,4"/>`);
    parts.push(`<text x="${W - R - 4}" y="${sy(h.y) - 4}" text-anchor="end" fill="#666">${esc(h.label)}</text>`);
  }
  series.forEach((s, i) => {
    const shown = s.points.filter((p) => Number.isFinite(p[1]));
    if (s.style === "points") {
      for (const p of shown) {
        parts.push(`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
      }
    } else {
      const d = shown.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
      parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${d.join(" ")}"/>`);
    }
    parts.push(`<rect x="${W - R - 150}" y="${T + 8 + i * 18}" width="12" height="3" fill="${s.color}"/>`);
    parts.push(`<text x="${W - R - 132}" y="${T + 13 + i * 18}">${esc(s.label)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

// A line chart of (x, y) points as a standalone SVG (the training loss curve): axes with min/max labels, no scripts.
function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function lossChart(points: [number, number][], title: string): string {
  const W = 640, H = 360, L = 60, R = 20, T = 36, B = 40;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`];
  const pts = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (!pts.length) return [...out, `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no logged steps</text>`, '</svg>'].join('\n') + '\n';
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const px = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R), py = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  out.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`, `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  out.push(`<text x="${L - 6}" y="${py(y1) + 4}" text-anchor="end">${y1.toFixed(3)}</text>`, `<text x="${L - 6}" y="${py(y0) + 4}" text-anchor="end">${y0.toFixed(3)}</text>`);
  out.push(`<text x="${L}" y="${H - B + 16}" text-anchor="middle">${x0}</text>`, `<text x="${W - R}" y="${H - B + 16}" text-anchor="middle">${x1}</text>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle">step</text>`);
  out.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${pts.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`);
  return out.concat('</svg>').join('\n') + '\n';
}

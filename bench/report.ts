import { Resvg } from '@resvg/resvg-js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Summary, round } from './stats';

export interface Row {
  name: string;
  service: Summary;
  floorName: string;
  floor: Summary;
}

export interface Target {
  what: string;
  measured: number;
  limit: number;
  /** 'max': measured must be at most limit; 'min': at least. */
  kind: 'max' | 'min';
  unit: string;
  met: boolean;
}

export function target(what: string, measured: number, kind: 'max' | 'min', limit: number, unit = 'x'): Target {
  const met = Number.isFinite(measured) && (kind === 'max' ? measured <= limit : measured >= limit);
  return { what, measured: round(measured, unit === 'x' ? 2 : 1), limit, kind, unit, met };
}

const pad = (value: string, width: number) => (value.length >= width ? value : value + ' '.repeat(width - value.length));
const lpad = (value: string, width: number) => (value.length >= width ? value : ' '.repeat(width - value.length) + value);
const ms = (value: number) => (Number.isFinite(value) ? value.toFixed(1) : '-');

export function latencyTable(rows: Row[]): string {
  const header = `${pad('operation', 30)}${lpad('n', 6)}${lpad('p50', 9)}${lpad('p90', 9)}${lpad('p99', 9)}${lpad('max', 9)}   ${pad('floor', 30)}${lpad('p50', 8)}${lpad('p99', 8)}${lpad('x p50', 8)}${lpad('x p99', 8)}`;
  const lines = [header, '-'.repeat(header.length)];
  for (const row of rows) {
    const s = row.service;
    const f = row.floor;
    lines.push(
      `${pad(row.name, 30)}${lpad(String(s.n), 6)}${lpad(ms(s.p50), 9)}${lpad(ms(s.p90), 9)}${lpad(ms(s.p99), 9)}${lpad(ms(s.max), 9)}   ` +
        `${pad(row.floorName, 30)}${lpad(ms(f.p50), 8)}${lpad(ms(f.p99), 8)}${lpad((s.p50 / f.p50).toFixed(2), 8)}${lpad((s.p99 / f.p99).toFixed(2), 8)}`,
    );
  }
  return lines.join('\n');
}

export function targetTable(targets: Target[]): string {
  const lines = targets.map(
    (t) => `${t.met ? 'met   ' : 'MISSED'}  ${pad(t.what, 62)} ${lpad(`${t.measured}${t.unit}`, 10)}  (${t.kind === 'max' ? '<=' : '>='} ${t.limit}${t.unit})`,
  );
  return lines.join('\n');
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export interface ScalePoint {
  idle: number;
  allocP50: number;
  floorP50: number;
  monitorMs: number;
}

/** Two panels: service vs floor latency (p50 bar, p99 tick) and the scaling from 10 to N idle instances. */
export function chartSvg(title: string, rows: Row[], scale: ScalePoint[]): string {
  const width = 1000;
  const rowHeight = 34;
  const top = 60;
  const left = 230;
  const plotWidth = width - left - 40;
  const panel1 = rows.length * rowHeight;
  const max = Math.max(1, ...rows.flatMap((row) => [row.service.p99, row.floor.p99]).filter(Number.isFinite));
  const x = (value: number) => left + (Math.min(value, max) / max) * plotWidth;
  const parts: string[] = [];
  parts.push(`<text x="20" y="30" font-size="18" font-weight="bold">${escape(title)}</text>`);
  parts.push(
    `<rect x="${left}" y="40" width="12" height="10" fill="#2b6cb0"/><text x="${left + 16}" y="49" font-size="12">service p50 (tick: p99)</text>` +
      `<rect x="${left + 200}" y="40" width="12" height="10" fill="#a0aec0"/><text x="${left + 216}" y="49" font-size="12">floor p50 (tick: p99)</text>`,
  );
  rows.forEach((row, index) => {
    const y = top + index * rowHeight;
    parts.push(`<text x="${left - 8}" y="${y + 13}" font-size="12" text-anchor="end">${escape(row.name)}</text>`);
    parts.push(`<text x="${left - 8}" y="${y + 27}" font-size="10" fill="#555" text-anchor="end">${escape(row.floorName)}</text>`);
    for (const [summary, color, dy] of [
      [row.service, '#2b6cb0', 2],
      [row.floor, '#a0aec0', 16],
    ] as const) {
      if (!Number.isFinite(summary.p50)) continue;
      parts.push(`<rect x="${left}" y="${y + dy}" width="${x(summary.p50) - left}" height="12" fill="${color}"/>`);
      parts.push(`<line x1="${x(summary.p99)}" y1="${y + dy - 1}" x2="${x(summary.p99)}" y2="${y + dy + 13}" stroke="#1a202c" stroke-width="2"/>`);
      parts.push(`<text x="${x(summary.p50) + 4}" y="${y + dy + 10}" font-size="10">${ms(summary.p50)}</text>`);
    }
  });
  const axisY = top + panel1 + 4;
  for (let i = 0; i <= 5; i += 1) {
    const value = (max * i) / 5;
    parts.push(`<line x1="${x(value)}" y1="${top - 4}" x2="${x(value)}" y2="${axisY}" stroke="#e2e8f0"/>`);
    parts.push(`<text x="${x(value)}" y="${axisY + 14}" font-size="10" text-anchor="middle">${value.toFixed(0)} ms</text>`);
  }

  // Panel 2: scaling.
  const p2Top = axisY + 50;
  const p2Height = 220;
  const p2Left = 90;
  const p2Width = width - p2Left - 90;
  parts.push(`<text x="20" y="${p2Top - 16}" font-size="14" font-weight="bold">Idle instances: warm allocation p50 (blue), floor unpause+reset p50 (grey), monitor pass (orange, right axis)</text>`);
  if (scale.length > 0) {
    const maxIdle = Math.max(...scale.map((point) => point.idle));
    const maxLatency = Math.max(1, ...scale.flatMap((point) => [point.allocP50, point.floorP50]).filter(Number.isFinite)) * 1.2;
    const maxMonitor = Math.max(1, ...scale.map((point) => point.monitorMs).filter(Number.isFinite)) * 1.2;
    const sx = (idle: number) => p2Left + (idle / maxIdle) * p2Width;
    const sy = (value: number, top: number) => p2Top + p2Height - (Math.min(value, top) / top) * p2Height;
    parts.push(`<rect x="${p2Left}" y="${p2Top}" width="${p2Width}" height="${p2Height}" fill="none" stroke="#cbd5e0"/>`);
    for (const [key, color, top] of [
      ['allocP50', '#2b6cb0', maxLatency],
      ['floorP50', '#a0aec0', maxLatency],
      ['monitorMs', '#dd6b20', maxMonitor],
    ] as const) {
      const points = scale.filter((point) => Number.isFinite(point[key])).map((point) => `${sx(point.idle)},${sy(point[key], top)}`);
      parts.push(`<polyline points="${points.join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
      for (const point of scale) {
        if (!Number.isFinite(point[key])) continue;
        parts.push(`<circle cx="${sx(point.idle)}" cy="${sy(point[key], top)}" r="3" fill="${color}"/>`);
      }
    }
    for (const point of scale) {
      parts.push(`<text x="${sx(point.idle)}" y="${p2Top + p2Height + 14}" font-size="10" text-anchor="middle">${point.idle}</text>`);
    }
    for (let i = 0; i <= 4; i += 1) {
      const yy = p2Top + p2Height - (i / 4) * p2Height;
      parts.push(`<text x="${p2Left - 6}" y="${yy + 3}" font-size="10" text-anchor="end">${((maxLatency * i) / 4).toFixed(0)} ms</text>`);
      parts.push(`<text x="${p2Left + p2Width + 6}" y="${yy + 3}" font-size="10" fill="#dd6b20">${((maxMonitor * i) / 4).toFixed(0)} ms</text>`);
    }
  }
  const height = p2Top + p2Height + 40;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif">` +
    `<rect width="${width}" height="${height}" fill="white"/>${parts.join('')}</svg>`
  );
}

export function writeChart(dir: string, name: string, svg: string): void {
  writeFileSync(join(dir, `${name}.svg`), svg);
  const png = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
  writeFileSync(join(dir, `${name}.png`), png);
}

import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { MetricName } from '../../../metrics/metric-names.js';

interface GridPos {
  x: number;
  y: number;
  w: number;
  h: number;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: GridPos;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

interface Dashboard {
  schemaVersion: number;
  panels: Panel[];
}

const DASHBOARD_URL = new URL('../../../metrics/grafana-dashboard.json', import.meta.url);

function load(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_URL, 'utf8')) as Dashboard;
}

/** Every panel, rows included, and the panels nested in collapsed rows. */
function allPanels(dashboard: Dashboard): Panel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

function exprs(panel: Panel): string[] {
  return (panel.targets ?? []).flatMap((t) => (t.expr === undefined ? [] : [t.expr]));
}

/** Metric names an expression uses, with histogram series suffixes stripped. */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/duraflow_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

function overlap(a: GridPos, b: GridPos): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

describe('grafana-dashboard.json', () => {
  const known = new Set<string>(Object.values(MetricName));

  it('parses as a dashboard', () => {
    const dashboard = load();
    expect(dashboard.schemaVersion).toBe(39);
    expect(dashboard.panels.length).toBeGreaterThan(0);
  });

  it('queries only metrics duraflow exports', () => {
    const unknown = allPanels(load()).flatMap((p) =>
      exprs(p)
        .flatMap(metricsIn)
        .filter((name) => !known.has(name))
        .map((name) => `${p.title}: ${name}`),
    );
    expect(unknown).toEqual([]);
  });

  it('uses every metric duraflow exports', () => {
    const used = new Set(allPanels(load()).flatMap((p) => exprs(p).flatMap(metricsIn)));
    expect([...known].filter((name) => !used.has(name))).toEqual([]);
  });

  it('gives every panel a unique id', () => {
    const ids = allPanels(load()).map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('lays panels out on the 24-wide grid without overlaps', () => {
    const panels = allPanels(load());
    for (const { title, gridPos: g } of panels) {
      expect(g.x >= 0 && g.y >= 0 && g.w > 0 && g.h > 0 && g.x + g.w <= 24, title).toBe(true);
    }
    const overlaps: string[] = [];
    for (const [i, a] of panels.entries()) {
      for (const b of panels.slice(i + 1)) {
        if (overlap(a.gridPos, b.gridPos)) overlaps.push(`${a.title} / ${b.title}`);
      }
    }
    expect(overlaps).toEqual([]);
  });
});

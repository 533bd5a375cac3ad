/**
 * A strict parser of the Prometheus text exposition format (0.0.4) for tests. npm's
 * parse-prometheus-text-format was tried first: it drops the labels, _count and _sum of labelled
 * histograms, so it cannot check ours. Every sample line must parse, every family must be TYPEd.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL_RE = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)/gy;

function parseLabels(text: string, line: string): Record<string, string> {
  const out: Record<string, string> = {};
  LABEL_RE.lastIndex = 0;
  let end = 0;
  for (let m = LABEL_RE.exec(text); m; m = LABEL_RE.exec(text)) {
    out[m[1]!] = m[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    end = LABEL_RE.lastIndex;
    if (end >= text.length) break;
  }
  if (end !== text.length) throw new Error(`bad labels in: ${line}`);
  return out;
}

function parseValue(v: string, line: string): number {
  // Prometheus reads values with Go's ParseFloat: Inf and NaN in any case (prom-client writes "Nan")
  if (/^\+?inf$/i.test(v)) return Infinity;
  if (/^-inf$/i.test(v)) return -Infinity;
  if (/^nan$/i.test(v)) return NaN;
  const n = Number(v);
  if (Number.isNaN(n)) throw new Error(`bad value in: ${line}`);
  return n;
}

export function parsePrometheus(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (m) types.set(m[1]!, m[2]!);
      continue;
    }
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    samples.push({ name: m[1]!, labels: m[2] ? parseLabels(m[2], line) : {}, value: parseValue(m[3]!, line) });
  }
  for (const s of samples) {
    const family = types.has(s.name) ? s.name : s.name.replace(/_(bucket|sum|count)$/, '');
    if (!types.has(family)) throw new Error(`sample ${s.name} has no # TYPE line`);
  }
  return { types, samples };
}

/** A scrape, parsed, with lookups by name and labels. */
export class Scrape {
  readonly types: Map<string, string>;
  readonly samples: Sample[];
  constructor(readonly text: string) {
    ({ types: this.types, samples: this.samples } = parsePrometheus(text));
  }

  has(family: string): boolean {
    return this.types.has(family);
  }

  /** Value of the first sample `name` whose labels include `labels` (0 when absent, as rate() would see it). */
  value(name: string, labels: Record<string, string> = {}): number {
    const s = this.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    return s?.value ?? 0;
  }

  /** Observation count of a histogram series. */
  count(name: string, labels: Record<string, string> = {}): number {
    return this.value(`${name}_count`, labels);
  }

  /** Every label value across all samples. */
  allLabelValues(): string[] {
    return this.samples.flatMap((s) => Object.values(s.labels));
  }
}

// Small helpers shared by scripts/demo.js and scripts/bench.js (statistics, tables, options).

/**
 * Percentiles of `values` (nearest rank). Sorts a copy.
 * @param {number[]} values
 * @param {number[]} ps e.g. [50, 90, 99]
 * @returns {Record<string, number>} `{ p50, p90, p99, max, min, mean, count }` (NaN when empty)
 */
function percentiles(values, ps = [50, 90, 99]) {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  const out = { count: n };
  for (const p of ps) {
    out[`p${p}`] = n === 0 ? Number.NaN : sorted[Math.min(n - 1, Math.ceil((p / 100) * n) - 1)];
  }
  let sum = 0;
  for (const v of sorted) sum += v;
  out.min = n === 0 ? Number.NaN : sorted[0];
  out.max = n === 0 ? Number.NaN : sorted[n - 1];
  out.mean = n === 0 ? Number.NaN : sum / n;
  return out;
}

/** `1234567.8` → `"1,234,568"`; small numbers keep `digits` decimals. */
function fmt(value, digits = 0) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '-';
  return value.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A duration in ms with a precision that suits its size. */
function fmtMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '-';
  if (ms < 1) return ms.toFixed(3);
  if (ms < 100) return ms.toFixed(2);
  return fmt(ms, 0);
}

/**
 * A plain-text table (works in logs and on a TTY alike).
 * @param {string[]} headers
 * @param {Array<Array<string|number>>} rows
 * @param {{ align?: Array<'l'|'r'> }} [opts] per column; default: first column left, others right
 */
function table(headers, rows, opts = {}) {
  const cells = [headers, ...rows].map((row) => row.map((c) => String(c)));
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length)));
  const align = opts.align ?? headers.map((_, i) => (i === 0 ? 'l' : 'r'));
  const line = (row) =>
    row
      .map((c, i) =>
        align[i] === 'l' ? (c ?? '').padEnd(widths[i]) : (c ?? '').padStart(widths[i]),
      )
      .join(' | ');
  const rule = widths.map((w) => '-'.repeat(w)).join('-+-');
  return [line(cells[0]), rule, ...cells.slice(1).map(line)].join('\n');
}

/**
 * Parses a command-line option as a positive integer, or exits with a usage error.
 * @param {string} text
 * @param {string} name
 * @returns {number}
 */
function positiveInt(text, name) {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`${name} must be a positive integer (got ${text})`);
    process.exit(2);
  }
  return n;
}

module.exports = {
  positiveInt,
  percentiles,
  fmt,
  fmtMs,
  table,
};

// Numbers as the CLI prints them (crates/posture/src/output.rs): points with at most two
// decimals and no trailing zeros, percents with exactly two decimals.

/** Points: `1234.5`, `1234.57`, `12` (the CLI's fmt_points). */
export function points(p) {
  return Number(p).toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
}

/** A percent: `69.65%`. */
export function percent(p) {
  return `${Number(p).toFixed(2)}%`;
}

/** An RFC 3339 instant for people: `2026-11-01 12:00 UTC`. */
export function instant(s) {
  return s ? s.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC") : "";
}

/** `misconfigured / applicable`, as the CLI's recommendations table. */
export function ratio(a, b) {
  return `${a} / ${b}`;
}

// One month of one usage type as an SVG chart, drawn here (no chart library): a bar per day's use,
// a line of the month's running total, and the monthly limit as a dashed line.
// Colours and fonts come from style.css classes: the CSP allows no inline styles.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560, HEIGHT = 180;
const PLOT = { left: 56, right: 14, top: 22, bottom: 26 };
// Past this many times the month's use, the limit line would squash the data flat: it is named instead.
const LIMIT_IN_SCALE_FACTOR = 4;

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function formatAmount(value) {
  if (value >= 1000) return Math.round(value).toLocaleString("en-US");
  if (value >= 10 || Number.isInteger(value)) return String(Math.round(value * 10) / 10);
  return String(Number(value.toFixed(value >= 1 ? 1 : 2)));  // 0.5, not 0.50
}

// The smallest 1, 2, 2.5 or 5 times a power of ten that is at least `value`, so axis ticks read cleanly.
function niceCeil(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function daysInMonth(periodStart) {
  const [year, month] = periodStart.split("-").map(Number);
  return new Date(Date.UTC(year, month, 0)).getUTCDate();  // day 0 of the next month is our last day
}

// {periodStart, days: ["YYYY-MM-DD"...], daily: [number...], limit: number|null, unit, shortUnit}
export function usageChart({ periodStart, days, daily, limit, unit, shortUnit }) {
  const monthDays = daysInMonth(periodStart);
  const plotWidth = WIDTH - PLOT.left - PLOT.right, plotHeight = HEIGHT - PLOT.top - PLOT.bottom;
  const band = plotWidth / monthDays;
  const cumulative = [];
  daily.reduce((total, amount, i) => (cumulative[i] = total + amount), 0);
  const used = cumulative.at(-1) ?? 0;

  const limitInScale = limit !== null && (used === 0 || limit <= used * LIMIT_IN_SCALE_FACTOR);
  const top = niceCeil(Math.max(used, limitInScale ? limit : 0, Math.max(0, ...daily)) * 1.08);
  const y = (value) => PLOT.top + plotHeight * (1 - value / top);
  const xCenter = (i) => PLOT.left + band * (i + 0.5);

  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
    "aria-label": `${formatAmount(used)} ${unit} used this month` + (limit === null ? ", no limit" : ` of ${formatAmount(limit)}`),
  });

  // Days still to come this month are shaded, so the month's length reads at a glance.
  if (days.length < monthDays) {
    root.append(svg("rect", {
      class: "future", x: PLOT.left + band * days.length, y: PLOT.top, width: band * (monthDays - days.length), height: plotHeight,
    }));
  }

  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction, at = y(value);
    root.append(svg("line", { class: "grid", x1: PLOT.left, x2: WIDTH - PLOT.right, y1: at, y2: at }));
    root.append(svg("text", { class: "tick", x: PLOT.left - 6, y: at + 4, "text-anchor": "end" }, formatAmount(value)));
  }
  root.append(svg("text", { class: "axis-label", x: 4, y: 12 }, unit));

  for (const day of [1, 5, 10, 15, 20, 25, monthDays]) {
    if (day === 25 && monthDays - day < 3) continue;  // would collide with the last day's label
    root.append(svg("text", { class: "tick", x: xCenter(day - 1), y: HEIGHT - 8, "text-anchor": "middle" }, String(day)));
  }

  daily.forEach((amount, i) => {
    if (amount <= 0) return;
    // At least a pixel high: a small day next to a big one must still show that it used something.
    const height = Math.max(1.5, y(0) - y(amount));
    const bar = svg("rect", {
      class: i === days.length - 1 ? "bar today" : "bar", "data-day": days[i], "data-amount": amount,
      x: PLOT.left + band * i + band * 0.15, y: y(0) - height, width: band * 0.7, height,
    });
    bar.append(svg("title", {}, `${days[i]}: ${formatAmount(amount)} ${shortUnit}`));
    root.append(bar);
  });

  if (used > 0) {
    const points = cumulative.map((total, i) => `${xCenter(i).toFixed(1)},${y(total).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { class: "cumulative", points }));
    const last = cumulative.length - 1;
    root.append(svg("circle", { class: "cumulative-point", cx: xCenter(last), cy: y(used), r: 3 }));
  }

  if (limitInScale) {
    const at = y(limit);
    root.append(svg("line", { class: "limit", x1: PLOT.left, x2: WIDTH - PLOT.right, y1: at, y2: at, "data-limit": limit }));
    root.append(svg("text", { class: "limit-label", x: WIDTH - PLOT.right, y: at - 4, "text-anchor": "end" },
      `limit ${formatAmount(limit)} ${shortUnit}`));
  } else {
    const note = limit === null ? "no monthly limit" : `limit ${formatAmount(limit)} ${shortUnit} is above this scale`;
    root.append(svg("text", { class: "limit-note", x: WIDTH - PLOT.right, y: 12, "text-anchor": "end" }, note));
  }

  root.append(svg("line", { class: "axis", x1: PLOT.left, x2: WIDTH - PLOT.right, y1: y(0), y2: y(0) }));
  return root;
}

// Usage: this UTC month per day for every usage type, against its monthly limit (GET /api/v1/usage/daily).
import { api, el } from "/static/api.js";
import { formatAmount, usageChart } from "/static/views/chart.js";

const $ = (id) => document.getElementById(id);

const TITLES = {
  mic_audio_seconds: "Microphone audio (calls)",
  speech_audio_seconds: "Agent speech audio (calls)",
  avatar_video_seconds: "Avatar video",
  stt_seconds: "Speech to text",
  tts_characters: "Text to speech",
  agent_tokens: "Agent tokens",
};
const SHORT_UNITS = { seconds: "s" };

function title(usageType) {
  return TITLES[usageType] ?? usageType.replaceAll("_", " ");
}

function summary(used, limit, shortUnit) {
  if (limit === null) return `${formatAmount(used)} ${shortUnit} · no limit`;
  const share = limit > 0 ? (100 * used) / limit : 100;
  const shown = share > 0 && share < 0.1 ? "<0.1" : share.toFixed(share < 10 ? 1 : 0);
  return `${formatAmount(used)} of ${formatAmount(limit)} ${shortUnit} (${shown}%)`;
}

function figure(report, usageType) {
  const entry = report.usage[usageType];
  const shortUnit = SHORT_UNITS[entry.unit] ?? entry.unit;
  const used = entry.daily.reduce((total, amount) => total + amount, 0);
  const over = entry.limit !== null && used >= entry.limit;
  return el("figure", { className: "usage-chart", dataset: { usageType } },
    el("figcaption", {},
      el("span", { className: "usage-title" }, title(usageType)),
      el("span", { className: over ? "usage-summary over" : "usage-summary" }, summary(used, entry.limit, shortUnit))),
    usageChart({
      periodStart: report.period_start, days: report.days, daily: entry.daily, limit: entry.limit,
      unit: entry.unit, shortUnit,
    }));
}

export function startUsage() {
  const charts = $("usage-charts"), status = $("usage-status");
  let generation = 0;

  async function refresh() {
    const mine = ++generation;
    status.textContent = "Loading…";
    status.dataset.kind = "";
    try {
      const report = await api("GET", "/api/v1/usage/daily");
      if (mine !== generation) return;
      charts.replaceChildren(...Object.keys(report.usage).map((usageType) => figure(report, usageType)));
      const month = new Date(`${report.period_start}T00:00:00Z`).toLocaleDateString("en-US", { month: "long", year: "numeric", timeZone: "UTC" });
      status.textContent = `${month}, up to ${report.days.at(-1)} (UTC)`;
    } catch (error) {
      if (mine !== generation) return;
      status.textContent = `Could not load usage: ${error.message}`;
      status.dataset.kind = "error";
    }
  }

  return { refresh };
}

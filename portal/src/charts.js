// Charts where people would rather look than read: ageing, exposure, volumes (Chart.js, served locally).
import { api } from "./api.js";
import { entity, exponent, h, panel } from "./ui.js";

const PALETTE = ["#1f6feb", "#1a7f37", "#9a6700", "#c62828", "#6f2da8", "#0e7490", "#5f6b7a", "#b45309"];
const STATUS_COLOURS = {
  registered: "#1f6feb", confirmed: "#1a7f37", disputed: "#c62828", assigned: "#6f2da8", partially_paid: "#b45309",
  settled: "#0b5a22", cancelled: "#8b95a1", defaulted: "#7f1d1d", written_off: "#4b5563", split: "#0e7490",
};
const live = new Set();

export function destroyCharts() {
  for (const c of live) c.destroy();
  live.clear();
}

function major(minor, currency) { return Number(minor) / 10 ** exponent(currency); }

function draw(canvas, config) {
  if (typeof window.Chart === "undefined") {
    canvas.replaceWith(h("div", { class: "empty" }, "Charts are unavailable (Chart.js did not load)."));
    return;
  }
  config.options = { responsive: true, maintainAspectRatio: false, animation: false, ...config.options };
  live.add(new window.Chart(canvas, config));
}

function chartPanel(title, hint, testid) {
  const canvas = h("canvas", { "data-testid": testid, role: "img", "aria-label": title });
  return { canvas, node: panel(title, h("p", { class: "hint" }, hint), h("div", { class: "chart" }, canvas)) };
}

export function ageingPanel() {
  const { canvas, node } = chartPanel("Ageing of open receivables", "Unpaid by days overdue, at the as-of block's time.", "chart-ageing");
  api("/stats/ageing").then((data) => {
    const buckets = ["current", "1-30", "31-60", "61-90", ">90"];
    const currencies = [...new Set(data.buckets.map((b) => b.currency))];
    if (!currencies.length) { canvas.replaceWith(h("div", { class: "empty" }, "No open receivables.")); return; }
    draw(canvas, {
      type: "bar",
      data: {
        labels: buckets,
        datasets: currencies.map((cur, i) => ({
          label: cur,
          backgroundColor: buckets.map((b) => (b === "current" ? PALETTE[i % PALETTE.length] : "#c62828")),
          data: buckets.map((b) => {
            const row = data.buckets.find((x) => x.currency === cur && x.bucket === b);
            return row ? major(row.unpaid, cur) : 0;
          }),
        })),
      },
      options: { plugins: { legend: { display: currencies.length > 1 } }, scales: { y: { beginAtZero: true } } },
    });
  }).catch((err) => canvas.replaceWith(h("div", { class: "error" }, String(err.message))));
  return node;
}

function exposureChart(canvas, rows, what) {
  if (!rows.length) { canvas.replaceWith(h("div", { class: "empty" }, `No open exposure by ${what}.`)); return; }
  const currencies = [...new Set(rows.map((r) => r.currency))];
  const entities = [...new Set(rows.map((r) => r.entity))].sort((a, b) => a - b);
  draw(canvas, {
    type: "bar",
    data: {
      labels: entities.map((e) => entity(e)),
      datasets: currencies.map((cur, i) => ({
        label: cur,
        backgroundColor: PALETTE[i % PALETTE.length],
        data: entities.map((e) => {
          const row = rows.find((r) => r.entity === e && r.currency === cur);
          return row ? major(row.unpaid, cur) : 0;
        }),
      })),
    },
    options: { indexAxis: "y", plugins: { legend: { display: currencies.length > 1 } } },
  });
}

export function exposurePanels({ debtor = true, factor = true } = {}) {
  const nodes = [];
  const a = debtor ? chartPanel("Exposure by debtor", "Unpaid amount owed by each debtor (open receivables).", "chart-exposure-debtor") : null;
  const b = factor ? chartPanel("Exposure by factor", "Unpaid amount held by each factor.", "chart-exposure-factor") : null;
  if (a) nodes.push(a.node);
  if (b) nodes.push(b.node);
  api("/stats/exposure").then((data) => {
    if (a) exposureChart(a.canvas, data.by_debtor, "debtor");
    if (b) exposureChart(b.canvas, data.by_factor, "factor");
  }).catch((err) => nodes.forEach((n) => n.append(h("div", { class: "error" }, String(err.message)))));
  return nodes;
}

export function volumesPanel() {
  const { canvas, node } = chartPanel("Volumes by status", "Transitions into each status per day, last 14 days.", "chart-volumes");
  api("/stats/volumes", { query: { period: "day", periods: 14 } }).then((data) => {
    const statuses = [...new Set(data.periods.flatMap((p) => Object.keys(p.counts)))];
    draw(canvas, {
      type: "bar",
      data: {
        labels: data.periods.map((p) => p.start.slice(5)),
        datasets: statuses.map((s) => ({
          label: s.replace(/_/g, " "),
          backgroundColor: STATUS_COLOURS[s] || "#8b95a1",
          data: data.periods.map((p) => p.counts[s] || 0),
        })),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }).catch((err) => canvas.replaceWith(h("div", { class: "error" }, String(err.message))));
  return node;
}

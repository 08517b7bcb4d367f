// Charts, drawn by uPlot (vendored in assets/vendor; index.html loads it as the global `uPlot`).
// A chart follows its container's width until the page that made it goes away.

const COLORS = ["#3b4fd8", "#e07a1f", "#137a43", "#b42318"];
const AXIS = { stroke: "#5b6276", grid: { stroke: "#eef0f5" }, ticks: { stroke: "#dde1ea" } };
// Steps are whole numbers: no ticks between them.
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

function mount(ctx, container, opts, data) {
  const width = () => Math.max(container.clientWidth, 240);
  const plot = new uPlot({ ...opts, width: width() }, data, container);
  const observer = new ResizeObserver(() => plot.setSize({ width: width(), height: opts.height }));
  observer.observe(container);
  ctx.onCleanup(() => {
    observer.disconnect();
    plot.destroy();
  });
  return plot;
}

// Lines over steps. `series`: [{label}]; `empty`: what to say until there is data. Returns
// set(lastStep, steps, ...ys) to redraw with new data, the x axis running from 0 to lastStep (the
// run's end, so that a curve shows how far training has come).
export function lineChart(ctx, container, { xLabel, yLabel, series, empty, digits = 4, height = 220 }) {
  const opts = {
    height,
    // Set by each redraw rather than fitted to the data (which would span 0..100 for one point).
    scales: { x: { time: false, auto: false, min: 0, max: 1 } },
    axes: [
      { ...AXIS, label: xLabel, incrs: WHOLE },
      { ...AXIS, label: yLabel, size: 60 },
    ],
    series: [
      { label: xLabel },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        points: { size: 6 },
        value: (u, v) => (v == null ? "—" : v.toFixed(digits)),
      })),
    ],
  };
  const plot = mount(ctx, container, opts, [[], ...series.map(() => [])]);
  const waiting = document.createElement("p");
  waiting.className = "waiting";
  waiting.textContent = empty;
  container.append(waiting);
  return (lastStep, ...data) => {
    plot.setData(data);
    plot.setScale("x", { min: 0, max: Math.max(lastStep, data[0].at(-1) ?? 0, 1) });
    waiting.hidden = data[0].length > 0;
  };
}

// Token lengths of (query, passage) pairs against the model's window: the buckets up to the
// window in one colour, the pairs that will be cut in another.
export function lengthHistogram(ctx, container, buckets, window) {
  const xs = buckets.map((_, i) => i);
  const cut = (b) => b.up_to > window;
  const labels = buckets.map((b) => (cut(b) ? `>${window}` : `≤${b.up_to}`));
  const bars = uPlot.paths.bars({ size: [0.75, 60] });
  const bar = (label, color) => ({
    label,
    fill: color,
    stroke: color,
    paths: bars,
    points: { show: false },
    value: (u, v) => (v == null ? "—" : v.toLocaleString()),
  });
  const opts = {
    height: 210,
    // The legend names the colours; the axis labels say what each bar is.
    legend: { live: false },
    scales: { x: { time: false, range: [-0.5, buckets.length - 0.5] }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: [
      { ...AXIS, grid: { show: false }, label: "Tokens per pair", splits: () => xs, values: (u, splits) => splits.map((i) => labels[i] ?? "") },
      { ...AXIS, label: "Pairs", size: 60 },
    ],
    series: [
      { label: "Length", value: (u, i) => (i == null ? "—" : labels[i]) },
      bar("Within the window", "#3b4fd8"),
      bar("Cut at the window", "#e07a1f"),
    ],
  };
  const data = [
    xs,
    buckets.map((b) => (cut(b) ? null : b.count)),
    buckets.map((b) => (cut(b) ? b.count : null)),
  ];
  mount(ctx, container, opts, data);
}

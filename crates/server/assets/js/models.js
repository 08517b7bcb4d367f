// The models page: the base models and every fine-tuned one, with status, base model, creation
// time and headline metric. It refreshes itself while a job is queued or training.
import { api } from "./api.js";
import { ACTIVE, badge, count, delta, el, errorBox, fixed, loading, modelLink, table, when } from "./ui.js";

const COLUMNS = [
  { label: "Model" },
  { label: "Status" },
  { label: "Base model" },
  { label: "Created" },
  { label: "Validation MRR@10", num: true },
];

function nameCell(href, name, id) {
  return el("div", {}, modelLink(href, name), id ? el("div", { class: "mono small muted" }, id) : null);
}

function statusCell(job) {
  const p = job.progress;
  return el(
    "div",
    {},
    badge(job.status),
    p ? el("div", { class: "small muted" }, `step ${count(p.step)} of ${count(p.total_steps)}`) : null,
  );
}

function metricCell(metrics) {
  if (!metrics) return "—";
  const tuned = metrics.finetuned.mrr_at_10;
  return el("span", {}, fixed(tuned), " ", delta(tuned - metrics.base.mrr_at_10));
}

function view(models, jobs) {
  const defaultName = models.find((m) => m.default_endpoints.length)?.name;
  const jobIds = new Set(jobs.map((j) => j.id + "-ft"));
  const rows = [
    ...models
      .filter((m) => !m.finetuned && !m.alias_of)
      .map((m) => [nameCell(m.name, m.name, m.default_endpoints.length ? "default model" : null), badge("STATUS_READY"), "—", "—", "—"]),
    ...jobs.map((j) => [
      nameCell(j.id, j.name, j.id + "-ft"),
      statusCell(j),
      j.settings.base_model.name || defaultName || "default model",
      when(j.created_at),
      metricCell(j.metrics),
    ]),
    // Models the CLI trained into the same registry: served, but without a job's history.
    ...models
      .filter((m) => m.finetuned && !jobIds.has(m.name))
      .map((m) => [nameCell(m.name, m.display_name || m.name, m.name), badge("STATUS_READY"), m.base_model || "—", when(m.created_at), "—"]),
  ];
  const parts = [table(COLUMNS, rows, { caption: "Models" })];
  if (!jobs.length) {
    parts.push(
      el(
        "div",
        { class: "card empty" },
        el("p", {}, "No fine-tuned models yet."),
        el("a", { class: "button", href: "#/create" }, "Create a rerank model"),
      ),
    );
  } else {
    parts.push(el("p", { class: "small muted" }, "MRR@10 on the validation set; the difference is against the base model."));
  }
  return parts;
}

export function modelsPage(root, ctx) {
  document.title = "Models · finerank";
  const body = el("div", {}, loading("Loading the models…"));
  root.append(
    el(
      "div",
      { class: "page-head" },
      el("div", {}, el("h1", {}, "Models"), el("p", {}, "Base models, and the rerank models fine-tuned from them.")),
      el("a", { class: "button", href: "#/create" }, "Create rerank model"),
    ),
    body,
  );
  const refresh = async () => {
    try {
      const [{ models }, { finetuned_models: jobs }] = await Promise.all([api.models(), api.jobs()]);
      body.replaceChildren(...view(models, jobs));
      return jobs.some((j) => ACTIVE.includes(j.status));
    } catch (e) {
      body.replaceChildren(errorBox("Could not load the models", e, () => ctx.repeat(refresh, 3000)));
      return false;
    }
  };
  ctx.repeat(refresh, 3000);
}

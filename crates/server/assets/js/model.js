// A model's page. For a fine-tune: its status timeline, training curves that update while it
// trains, its validation metrics against the base model (and, for a dataset with a corpus, its
// retrieval figures), an API tab and deletion. For a base model (or one the CLI trained): what it
// is and the API tab.
import { api, apiKey } from "./api.js";
import { lineChart } from "./charts.js";
import {
  ACTIVE, badge, confirmDialog, copyButton, count, delta, el, errorBox, fixed, loading, statusLabel, table, toast, when,
} from "./ui.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PATH = ["STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_DEPLOYING_API", "STATUS_READY"];
const METRICS = [
  ["accuracy_at_1", "Accuracy@1"],
  ["accuracy_at_3", "Accuracy@3"],
  ["mrr_at_10", "MRR@10"],
  ["ndcg_at_10", "nDCG@10"],
];
const RETRIEVAL_METRICS = [
  ["recall_at_10", "Recall@10"],
  ["recall_at_100", "Recall@100"],
  ["mrr_at_10", "MRR@10"],
  ["map_at_100", "MAP@100"],
];
const HYPERPARAMETERS = [
  "train_epochs",
  "learning_rate",
  "train_batch_size",
  "early_stopping_patience",
  "early_stopping_threshold",
  "lora_rank",
  "lora_alpha",
  "lora_dropout",
  "lora_target_modules",
  "frozen_layers",
  "micro_batch_size",
  "gradient_checkpointing",
  "export",
];
const EXAMPLE_QUERY = "What is the capital of the United States?";
const EXAMPLE_DOCUMENTS = [
  "Carson City is the capital city of the American state of Nevada.",
  "Washington, D.C. (also known as simply Washington or D.C.) is the capital of the United States.",
  "Capital punishment has existed in the United States since before it was a country.",
];

export async function modelPage(root, ctx, name) {
  document.title = `${name} · finerank`;
  root.append(loading("Loading the model…"));
  const jobId = name.replace(/-ft$/, "");
  if (UUID.test(jobId)) {
    const { finetuned_models: jobs } = await api.jobs();
    const job = jobs.find((j) => j.id === jobId);
    if (job) return jobPage(root, ctx, job);
  }
  servedPage(root, await api.model(name));
}

// Tabs as WAI-ARIA describes them: arrow keys move between tabs, Tab moves into the panel.
function tabs(entries) {
  const list = el("div", { role: "tablist", class: "tabs", "aria-label": "Model sections" });
  const panels = [];
  const buttons = entries.map(([label, panel], i) => {
    const id = "tab-" + label.toLowerCase();
    panel.id = id + "-panel";
    panel.setAttribute("role", "tabpanel");
    panel.setAttribute("aria-labelledby", id);
    panels.push(panel);
    return el("button", { type: "button", role: "tab", id, "aria-controls": panel.id, onclick: () => select(i) }, label);
  });
  function select(i, focus) {
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
      panels[j].hidden = i !== j;
    });
    if (focus) buttons[i].focus();
  }
  list.addEventListener("keydown", (e) => {
    const at = buttons.indexOf(document.activeElement);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (at >= 0 && step) select((at + step + buttons.length) % buttons.length, true);
  });
  list.append(...buttons);
  select(0);
  return [list, ...panels];
}

const baseUrl = () => new URL(".", location.href).href.replace(/\/$/, "");
const shellQuote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";

function codeBlock(title, text) {
  const pre = el("pre", {}, el("code", {}, text));
  return el("div", {}, el("h3", {}, title), el("div", { class: "code" }, pre, copyButton(text, pre)));
}

// Ready-to-copy calls of the model: curl, the cohere SDK with base_url, and TEI's /rerank.
function apiPanel(model, { ready, isDefault }) {
  const base = baseUrl();
  const key = apiKey();
  const body = JSON.stringify({ model, query: EXAMPLE_QUERY, documents: EXAMPLE_DOCUMENTS, top_n: 2 }, null, 2);
  const auth = key ? ` \\\n  -H "Authorization: Bearer $FINERANK_API_KEY"` : "";
  const curl = `curl -s ${base}/v2/rerank${auth} \\\n  -H "Content-Type: application/json" \\\n  -d ${shellQuote(body)}`;
  const python = [
    "import cohere",
    "",
    `co = cohere.ClientV2(base_url=${JSON.stringify(base)}, api_key=${key ? 'os.environ["FINERANK_API_KEY"]' : '"unused"'})`,
    "response = co.rerank(",
    `    model=${JSON.stringify(model)},`,
    `    query=${JSON.stringify(EXAMPLE_QUERY)},`,
    "    documents=[",
    ...EXAMPLE_DOCUMENTS.map((d) => `        ${JSON.stringify(d)},`),
    "    ],",
    "    top_n=2,",
    ")",
    "for result in response.results:",
    "    print(result.index, result.relevance_score)",
  ];
  if (key) python.splice(0, 1, "import os", "", "import cohere");
  const tei = JSON.stringify({ query: EXAMPLE_QUERY, texts: EXAMPLE_DOCUMENTS }, null, 2);
  const teiCall = `curl -s ${base}/rerank${auth} \\\n  -H "Content-Type: application/json" \\\n  -d ${shellQuote(tei)}`;
  const teiText = isDefault
    ? teiCall
    : `# TEI's /rerank answers with the default model: serve this one as the default.\nfinerank serve --default-model ${model}\n\n${teiCall}`;
  const idCode = el("code", {}, model);
  return el(
    "div",
    {},
    ready ? null : el("p", { class: "note" }, "The model answers these calls once its status is Ready."),
    el("h2", {}, "Model id"),
    el("p", { class: "muted" }, "Pass it as ", el("code", {}, "model"), " to any Cohere client; only ", el("code", {}, "base_url"), " changes."),
    el("div", { class: "id-row" }, idCode, copyButton(model, idCode, "Copy id")),
    el("h2", {}, "Examples"),
    codeBlock("curl", curl),
    codeBlock("Python (cohere SDK)", python.join("\n")),
    codeBlock("Text Embeddings Inference /rerank", teiText),
  );
}

function servedPage(root, info) {
  const isDefault = info.default_endpoints.length > 0;
  const overview = el(
    "div",
    { class: "card" },
    el(
      "dl",
      { class: "meta" },
      el("dt", {}, "Kind"),
      el("dd", {}, info.finetuned ? "Fine-tuned outside this server (finerank finetune)" : isDefault ? "Base model (the default)" : "Base model"),
      info.base_model ? [el("dt", {}, "Base model"), el("dd", {}, info.base_model)] : null,
      info.created_at ? [el("dt", {}, "Created"), el("dd", {}, when(info.created_at))] : null,
    ),
    el("div", { class: "actions" }, el("a", { class: "button ghost", href: "#/playground?model=" + encodeURIComponent(info.name) }, "Try it in the playground")),
  );
  root.replaceChildren(
    el("div", { class: "page-head" }, el("div", {}, el("h1", {}, info.display_name || info.name), badge("STATUS_READY"))),
    ...tabs([
      ["Overview", overview],
      ["API", apiPanel(info.name, { ready: true, isDefault })],
    ]),
  );
}

function timeline(job, events) {
  const reached = new Set(events.map((e) => e.status));
  const items = events.map((e, i) => {
    const last = i === events.length - 1;
    const cls = e.status === "STATUS_FAILED" ? "failed" : last && ACTIVE.includes(e.status) ? "current" : "done";
    return el(
      "li",
      { class: cls },
      el("strong", {}, statusLabel(e.status)),
      el("span", { class: "when" }, when(e.created_at)),
      e.message ? el("div", { class: "small" }, e.message) : null,
    );
  });
  if (ACTIVE.includes(job.status)) {
    for (const status of PATH.filter((s) => !reached.has(s))) {
      items.push(el("li", { class: "pending" }, el("strong", {}, statusLabel(status)), el("span", { class: "when" }, "to come")));
    }
  }
  const list = el("ol", { class: "timeline", "aria-label": "Status history" }, items);
  const p = job.progress;
  if (job.status !== "STATUS_FINETUNING" || !p) return [list];
  // Before its first step a run measures the base model, which the curves show as step 0.
  const label = p.step
    ? `Step ${count(p.step)} of ${count(p.total_steps)} · epoch ${p.epoch}` + (p.loss == null ? "" : ` · loss ${fixed(p.loss, 4)}`)
    : `Measuring the base model before step 1 of ${count(p.total_steps)}`;
  return [
    list,
    el("label", { for: "progress" }, label),
    el("progress", { id: "progress", max: Math.max(1, p.total_steps), value: p.step }),
  ];
}

function metricsView(m) {
  if (!m) return el("p", { class: "muted" }, "The validation metrics appear here when training finishes.");
  const rows = METRICS.map(([key, label]) => [label, fixed(m.base[key]), fixed(m.finetuned[key]), delta(m.finetuned[key] - m.base[key])]);
  const noGain = m.improved
    ? []
    : [
        el(
          "div",
          { class: "error-box", role: "alert" },
          "No checkpoint beat the base model on validation: this model holds the base's weights. " +
            "If the data has no hard negatives, mine them first (upload it again with its corpus and " +
            "Mine hard negatives, or run finerank mine) and train again.",
        ),
      ];
  return [
    ...noGain,
    table([{ label: "Metric" }, { label: "Base model", num: true }, { label: "Fine-tuned", num: true }, { label: "Difference", num: true }], rows, {
      caption: "Validation metrics against the base model",
    }),
    el(
      "p",
      { class: "small muted" },
      `On the validation set. The kept checkpoint is step ${m.best_step} of ${m.steps}` +
        (m.stopped_early ? " (training stopped early)" : "") +
        `; training took ${Math.round(m.train_seconds)} s.`,
    ),
  ];
}

const pValue = (p) => (p < 1e-4 ? p.toExponential(1) : p.toFixed(4));

// Retrieval as search sees it: BM25's top k for each evaluation query, alone and re-ranked by the
// base and by the fine-tuned model, with CIs, and the fine-tuned model's paired difference from
// the base.
function retrievalView(r) {
  const [first, base, tuned] = r.systems;
  const label = { [first.name]: "BM25 alone", [base.name]: `Base model (${base.name})`, [tuned.name]: "Fine-tuned" };
  const vsBase = r.comparisons.find((c) => c.a === base.name && c.b === tuned.name)?.comparison.ndcg_at_10;
  const withCi = (e) => `${fixed(e.mean)} [${fixed(e.ci_low)}, ${fixed(e.ci_high)}]`;
  const rows = r.systems.map((s) => [
    label[s.name] || s.name,
    withCi(s.metrics.ndcg_at_10),
    ...RETRIEVAL_METRICS.map(([key]) => fixed(s.metrics[key].mean)),
    s === tuned && vsBase
      ? el("span", {}, delta(vsBase.diff.mean), ` [${fixed(vsBase.diff.ci_low)}, ${fixed(vsBase.diff.ci_high)}] p = ${pValue(vsBase.p_value)}`)
      : "—",
  ]);
  return [
    el(
      "p",
      { class: "note" },
      `These ${count(r.queries)} evaluation queries also chose the checkpoint during training, so the fine-tuned model's figures lean optimistic: they are not a held-out test.`,
    ),
    table(
      [{ label: "System" }, { label: "nDCG@10 [95% CI]", num: true }, ...RETRIEVAL_METRICS.map(([, name]) => ({ label: name, num: true })), { label: "nDCG@10 vs base", num: true }],
      rows,
      { caption: "Retrieval on the corpus against the base model" },
    ),
    el(
      "p",
      { class: "small muted" },
      `BM25's top ${r.top_k} over the ${count(r.corpus_docs)} documents of ${r.collection}, re-ranked by each model. ` +
        "95% bootstrap CIs; the difference from the base has a paired bootstrap CI and a randomization-test p-value, as finerank eval --beir reports them.",
    ),
  ];
}

function jobPage(root, ctx, job) {
  const model = job.id + "-ft";
  const title = el("h1", {}, job.name);
  const status = el("span", {}, badge(job.status));
  const meta = el("dl", { class: "meta" });
  const timelineBox = el("div", {});
  const metricsBox = el("div", {});
  const retrievalBox = el("div", {});
  const retrievalCard = el("section", { class: "card", hidden: true }, el("h2", {}, "Retrieval on the corpus"), retrievalBox);
  const pollError = el("div", {});
  const lossBox = el("div", { class: "chart", role: "img", "aria-label": "Training loss per step" });
  const evalBox = el("div", { class: "chart", role: "img", "aria-label": "Validation metrics per evaluation" });
  const curvesNote = el("p", { class: "small muted" });
  const apiBox = el("div", {});
  const playground = el("a", { class: "button ghost", href: "#/playground?model=" + encodeURIComponent(model), hidden: true }, "Try it in the playground");
  const remove = el("button", { type: "button", class: "danger", onclick: () => deleteJob(job) }, "Delete");
  const overview = el(
    "div",
    {},
    pollError,
    el("div", { class: "grid" }, el("section", { class: "card" }, el("h2", {}, "Status"), timelineBox), el("section", { class: "card" }, el("h2", {}, "Details"), meta)),
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Training curves"),
      curvesNote,
      el("div", { class: "grid" }, el("div", {}, el("h3", {}, "Loss per step"), lossBox), el("div", {}, el("h3", {}, "Validation metrics per evaluation"), evalBox)),
    ),
    el("section", { class: "card" }, el("h2", {}, "Validation metrics against the base model"), metricsBox),
    retrievalCard,
  );
  root.replaceChildren(
    el(
      "div",
      { class: "page-head" },
      el("div", {}, title, el("div", { class: "row" }, status, el("span", { class: "mono small muted" }, model))),
      el("div", { class: "row" }, playground, remove),
    ),
    ...tabs([
      ["Overview", overview],
      ["API", apiBox],
    ]),
  );

  const drawLoss = lineChart(ctx, lossBox, { xLabel: "Step", yLabel: "Loss", series: [{ label: "Training loss" }], empty: "No steps yet" });
  const drawEval = lineChart(ctx, evalBox, {
    xLabel: "Step",
    yLabel: "Score",
    series: [{ label: "MRR@10" }, { label: "Accuracy@1" }],
    empty: "No evaluations yet",
  });
  const losses = { steps: [], values: [] };
  let datasetName = null;
  let shownStatus = null;

  const refresh = async () => {
    try {
      const last = losses.steps.at(-1) || 0;
      const [{ finetuned_model: current }, { events }, { step_metrics: evals }, { losses: fresh }] = await Promise.all([
        api.job(job.id),
        api.events(job.id),
        api.stepMetrics(job.id),
        api.losses(job.id, last),
      ]);
      if (datasetName === null) datasetName = await api.dataset(current.settings.dataset_id).then((d) => d.dataset.name, () => "");
      pollError.replaceChildren();
      title.textContent = current.name;
      document.title = `${current.name} · finerank`;
      status.replaceChildren(badge(current.status));
      timelineBox.replaceChildren(...timeline(current, events));
      meta.replaceChildren(...details(current, datasetName));
      for (const l of fresh) {
        losses.steps.push(l.step_number);
        losses.values.push(l.loss);
      }
      const points = [...evals].sort((a, b) => a.step_number - b.step_number);
      const lastStep = current.metrics?.steps ?? current.progress?.total_steps ?? points.at(-1)?.step_number ?? 0;
      drawLoss(lastStep, losses.steps, losses.values);
      drawEval(lastStep, points.map((s) => s.step_number), points.map((s) => s.metrics.mrr_at_10), points.map((s) => s.metrics.accuracy_at_1));
      const active = ACTIVE.includes(current.status);
      curvesNote.textContent = active
        ? "These update live while the model trains. Step 0 is the base model."
        : points.length ? "Step 0 is the base model, before any training." : "This job recorded no training.";
      metricsBox.replaceChildren(...[metricsView(current.metrics)].flat());
      const retrieval = current.metrics?.retrieval;
      retrievalCard.hidden = !retrieval;
      if (retrieval) retrievalBox.replaceChildren(...retrievalView(retrieval));
      if (current.status !== shownStatus) {
        shownStatus = current.status;
        apiBox.replaceChildren(apiPanel(model, { ready: current.status === "STATUS_READY", isDefault: false }));
        playground.hidden = current.status !== "STATUS_READY";
      }
      return active;
    } catch (e) {
      if (e.status === 404) {
        root.replaceChildren(errorBox("This model no longer exists", e));
        return false;
      }
      // The server may be restarting: say so, and keep trying.
      pollError.replaceChildren(errorBox("Could not refresh; retrying", e));
      return true;
    }
  };
  ctx.repeat(refresh, 1500);
}

function details(job, datasetName) {
  // What the run used, defaults filled in, once it has run; until then what was asked for.
  const used = job.metrics?.hyperparameters || job.settings.hyperparameters || {};
  const hyper = HYPERPARAMETERS.filter((k) => k in used).map((k) => [k, used[k]]);
  const pair = (term, value) => [el("dt", {}, term), el("dd", {}, value)];
  return [
    pair("Model id", el("span", { class: "mono" }, job.id + "-ft")),
    pair("Base model", job.settings.base_model.name || "the default model"),
    pair("Dataset", datasetName ? `${datasetName} (${job.settings.dataset_id})` : job.settings.dataset_id),
    pair("Created", when(job.created_at)),
    job.completed_at ? pair("Finished", when(job.completed_at)) : null,
    job.failure_reason ? pair("Failure", el("span", { class: "down" }, job.failure_reason)) : null,
    pair("Hyperparameters", hyper.length ? el("ul", { class: "plain" }, hyper.map(([k, v]) => el("li", {}, el("code", {}, k), ` ${v}`))) : "defaults"),
  ].flat().filter(Boolean);
}

async function deleteJob(job) {
  const ok = await confirmDialog({
    title: `Delete ${job.name}?`,
    body: "A running job stops, and a trained model stops answering and is removed from disk. This cannot be undone.",
    confirm: "Delete model",
  });
  if (!ok) return;
  try {
    await api.deleteJob(job.id);
    toast(`Deleted ${job.name}`);
    location.hash = "#/models";
  } catch (e) {
    toast(`Could not delete: ${e.message}`);
  }
}

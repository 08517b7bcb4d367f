// The "create rerank model" wizard, as in Cohere's dashboard: 1) upload a training set, an
// optional validation set and an optional corpus (with hard negatives mined from it, if asked),
// 2) review the server's validation of them, 3) name the model and set its hyperparameters,
// 4) start training.
import { api, servedModels } from "./api.js";
import { lengthHistogram } from "./charts.js";
import { badge, count, el, errorBox, fixed, loading, table, toast } from "./ui.js";

const STEPS = ["Upload data", "Review data", "Name and hyperparameters", "Start training"];
const PREVIEW_PASSAGES = 2;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const bytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`);

export function createPage(root, ctx) {
  document.title = "Create rerank model · finerank";
  const state = { files: {}, mine: false, datasetName: "", dataset: null, modelName: "", base: "", hyper: null, values: {}, targets: "", checkpointing: false, export: "merged" };
  const stepper = el("ol", { class: "steps", "aria-label": "Steps" }, STEPS.map((s) => el("li", {}, s)));
  const body = el("div");
  root.append(
    el("div", { class: "page-head" }, el("div", {}, el("h1", {}, "Create a rerank model"), el("p", {}, "Fine-tune a reranker on your own queries and passages."))),
    stepper,
    body,
  );

  // Charts of the step shown are removed when another step is shown.
  const stepCleanups = [];
  const stepCtx = { onCleanup: (f) => stepCleanups.push(f) };
  const closeStep = () => stepCleanups.splice(0).forEach((f) => f());
  ctx.onCleanup(closeStep);

  // `focus`: move focus to the new step's heading, as after a click on Continue or Back, so that
  // keyboard and screen reader users carry on from there.
  function go(step, focus = true) {
    closeStep();
    [...stepper.children].forEach((li, i) => {
      li.className = i < step ? "done" : "";
      if (i === step) li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    });
    const heading = el("h2", { id: "step-heading", tabindex: "-1" }, `Step ${step + 1}: ${STEPS[step]}`);
    const panel = el("section", { class: "card", "aria-labelledby": heading.id }, heading);
    body.replaceChildren(panel);
    [uploadStep, reviewStep, settingsStep, startStep][step](panel);
    if (focus) heading.focus();
  }

  // 1. Upload.
  function dropZone(key, title, help, required) {
    const helpId = `help-${key}`;
    const error = el("p", { class: "invalid", role: "alert" });
    const chosen = el("span", { class: "file" });
    const clear = el("button", { type: "button", class: "ghost small", hidden: true, onclick: () => pick(null) }, `Remove ${title.toLowerCase()}`);
    const input = el("input", { type: "file", id: `file-${key}`, accept: ".jsonl", "aria-describedby": helpId, required, onchange: () => pick(input.files[0]) });
    const zone = el(
      "label",
      { class: "drop", for: input.id },
      el("span", { class: "title" }, required ? title : `${title} (optional)`),
      el("span", {}, "Drop a .jsonl file here, or click to choose one"),
      chosen,
      input,
    );
    function pick(file) {
      error.textContent = "";
      if (file && !/\.jsonl$/i.test(file.name)) {
        error.textContent = `${file.name} is not a .jsonl file: give one JSON object per line, in a file ending in .jsonl.`;
        return;
      }
      state.files[key] = file || null;
      chosen.textContent = file ? `${file.name} · ${bytes(file.size)}` : "";
      clear.hidden = !file;
      if (!file) input.value = "";
      if (file && key === "train" && !state.datasetName) nameInput.value = state.datasetName = file.name.replace(/\.jsonl$/i, "");
    }
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      pick(e.dataTransfer.files[0]);
    });
    if (state.files[key]) pick(state.files[key]);
    return el("div", { class: "field" }, zone, el("p", { class: "help", id: helpId }, help), error, clear);
  }

  let nameInput;
  function uploadStep(panel) {
    nameInput = el("input", { type: "text", id: "dataset-name", required: true, maxlength: "256", value: state.datasetName, oninput: () => (state.datasetName = nameInput.value) });
    const mine = el("input", { type: "checkbox", id: "mine-negatives", checked: state.mine, "aria-describedby": "help-mine", onchange: () => (state.mine = mine.checked) });
    const status = el("div", { "aria-live": "polite" });
    const submit = el("button", { type: "submit" }, "Upload and review");
    const form = el(
      "form",
      { novalidate: true },
      el("p", { class: "muted" }, "Each line of a file is one query with its relevant passages and hard negatives: ", el("code", {}, '{"query": "…", "relevant_passages": ["…"], "hard_negatives": ["…", "…"]}')),
      el("div", { class: "grid" }, dropZone("train", "Training set", "Required. Cohere asks for at least 256 queries.", true), dropZone("valid", "Validation set", "Optional. Without one, a tenth of the training queries is held out.", false)),
      el(
        "div",
        { class: "grid" },
        dropZone(
          "corpus",
          "Corpus",
          'Optional. The documents the passages come from, as BEIR\'s corpus.jsonl: one {"_id", "title", "text"} per line. After training, the model is measured re-ranking BM25\'s top 100 from it.',
          false,
        ),
        el(
          "div",
          { class: "field" },
          el("label", { class: "check" }, mine, " Mine hard negatives from the corpus"),
          el(
            "p",
            { class: "help", id: "help-mine" },
            "For each query, the default model picks the corpus documents closest to its relevant passage that are not relevant, as finerank mine does, and training uses them. Rows keep their own negatives first. Without a validation set, a tenth of the queries is held out.",
          ),
        ),
      ),
      el("div", { class: "field" }, el("label", { for: "dataset-name" }, "Dataset name"), nameInput, el("p", { class: "help" }, "Shown in lists; it defaults to the training file's name.")),
      status,
      el("div", { class: "actions" }, submit),
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = nameInput.value.trim();
      if (!state.files.train) return status.replaceChildren(errorBox("Choose a training file first."));
      if (!name) {
        nameInput.focus();
        return status.replaceChildren(errorBox("Give the dataset a name."));
      }
      submit.disabled = true;
      try {
        const progress = loading("Uploading…");
        status.replaceChildren(progress);
        const { id } = await api.createDataset(name, state.files, state.mine, (f) => (progress.textContent = `Uploading… ${Math.round(f * 100)}%`));
        status.replaceChildren(loading(state.mine ? "Validating the data and mining hard negatives…" : "Validating the data…"));
        let dataset = (await api.dataset(id)).dataset;
        while (["queued", "processing"].includes(dataset.validation_status)) {
          await sleep(700);
          if (!ctx.active) return;
          dataset = (await api.dataset(id)).dataset;
        }
        state.dataset = dataset;
        if (ctx.active) go(1);
      } catch (err) {
        status.replaceChildren(errorBox("The upload failed", err));
        submit.disabled = false;
      }
    });
    panel.append(form);
  }

  // 2. Review.
  function problems(review) {
    const rows = [
      ...review.errors.map((p) => ({ className: "problem-error", cells: [el("span", { class: "badge failed" }, "Error"), ...problemCells(p)] })),
      ...review.warnings.map((p) => ({ className: "problem-warning", cells: [el("span", { class: "badge queued" }, "Warning"), ...problemCells(p)] })),
    ];
    if (!rows.length) return null;
    return el(
      "div",
      { class: "problems" },
      el("h3", {}, "Problems"),
      table([{ label: "Severity" }, { label: "File" }, { label: "Line" }, { label: "Problem" }, { label: "Suggested fix" }], rows, { caption: "Problems found in the files" }),
    );
  }
  const problemCells = (p) => [p.file, el("span", { class: "line" }, p.line ? `line ${p.line}` : "whole file"), p.message, p.fix];

  function passages(list) {
    if (!list.length) return el("span", { class: "muted" }, "none");
    const shown = list.slice(0, PREVIEW_PASSAGES).map((p) => el("li", {}, el("span", { class: "clamp" }, p)));
    const more = list.length > PREVIEW_PASSAGES ? el("li", { class: "muted" }, `and ${list.length - PREVIEW_PASSAGES} more`) : null;
    return el("ul", {}, shown, more);
  }

  function fileCard(label, stats, window, mounts) {
    const chart = el("div", { class: "chart", role: "img", "aria-label": `Token lengths of the ${label.toLowerCase()}'s pairs against the ${window}-token window` });
    mounts.push(() => lengthHistogram(stepCtx, chart, stats.length_histogram, window));
    const share = stats.pairs ? (100 * stats.truncated_pairs) / stats.pairs : 0;
    const stat = (term, value) => el("div", {}, el("dt", {}, term), el("dd", {}, value));
    return el(
      "section",
      { class: "card", "aria-label": label },
      el("h3", {}, `${label}: `, el("span", { class: "cell-text" }, stats.file)),
      el(
        "dl",
        { class: "stats" },
        stat("Queries", count(stats.unique_queries)),
        stat("Rows", count(stats.rows)),
        stat("Avg relevant passages", fixed(stats.avg_relevant, 2)),
        stat("Avg hard negatives", fixed(stats.avg_hard_negatives, 2)),
        stat("Pairs", count(stats.pairs)),
        stat("Median / p95 tokens", `${stats.p50_pair_tokens} / ${stats.p95_pair_tokens}`),
      ),
      el("h4", {}, "Token length of each (query, passage) pair"),
      chart,
      el(
        "p",
        { class: "small muted" },
        `The model reads ${window} tokens of a pair. ${count(stats.truncated_pairs)} of ${count(stats.pairs)} pairs (${share.toFixed(1)}%) are longer and will be cut.`,
      ),
      el("h4", {}, "First rows"),
      table(
        [{ label: "Query" }, { label: "Relevant passages" }, { label: "Hard negatives" }],
        stats.samples.map((row) => [el("span", { class: "clamp" }, row.query), passages(row.relevant_passages), passages(row.hard_negatives)]),
        { caption: `First rows of the ${label.toLowerCase()}` },
      ),
    );
  }

  // What mining did: where candidates came from, what scored them, and what it kept and dropped.
  function miningCard(m) {
    const stat = (term, value) => el("div", {}, el("dt", {}, term), el("dd", {}, value));
    return el(
      "section",
      { class: "card", "aria-label": "Mining" },
      el("h3", {}, "Hard negatives mined from the corpus"),
      el("p", {}, "Candidates from ", el("strong", {}, m.first_stage), ", scored by ", el("strong", {}, m.scorer), "."),
      el(
        "dl",
        { class: "stats" },
        stat("Negatives per query", fixed(m.queries ? m.negatives / m.queries : 0, 2)),
        stat("Queries short of negatives", `${count(m.queries_short)} of ${count(m.queries)}`),
        stat("Dropped as judged relevant", count(m.dropped_positive)),
        stat("Dropped as repeated texts", count(m.dropped_repeated_text)),
        stat("Dropped by margin", count(m.dropped_absolute_margin + m.dropped_relative_margin)),
        stat("Seconds", fixed(m.seconds, 1)),
      ),
      el(
        "p",
        { class: "small muted" },
        `${count(m.negatives)} negatives for ${count(m.queries)} queries over ${count(m.corpus_docs)} documents, from ${count(m.candidates)} candidates looked at.` +
          (m.cache_hits.length ? ` Reused from the cache: ${m.cache_hits.join(", ")}.` : "") +
          " The statistics below are of the mined rows, which training reads.",
      ),
    );
  }

  function reviewStep(panel) {
    const d = state.dataset;
    const r = d.review;
    const ok = d.validation_status === "validated";
    const mounts = [];
    const warnings = r ? r.warnings.length : 0;
    panel.append(
      el("p", { class: "row" }, el("strong", { class: "cell-text" }, d.name), badge(d.validation_status)),
      ok
        ? el("p", { class: "note" }, warnings ? `The data can be used for training. Look over the ${warnings} warning(s) below.` : "The data can be used for training: no problems found.")
        : el(
            "div",
            { class: "error-box", role: "alert" },
            el("strong", {}, r ? `${r.errors.length} error(s): this data cannot be used for training.` : "This data cannot be used for training."),
            r ? "Fix each problem in the file, at the line given, then upload it again." : d.validation_error,
          ),
      r ? problems(r) : null,
      r?.mining ? miningCard(r.mining) : null,
      r ? el("div", {}, [["Training set", r.train], ["Validation set", r.valid]].filter(([, s]) => s).map(([label, s]) => fileCard(label, s, r.max_len ?? s.length_histogram.at(s.truncated_pairs ? -2 : -1).up_to, mounts))) : null,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "ghost", onclick: () => go(0) }, "Back: upload other files"),
        el("button", { type: "button", disabled: !ok, "aria-describedby": ok ? null : "blocked", onclick: () => go(2) }, "Continue"),
        ok ? null : el("span", { id: "blocked", class: "small muted" }, "Fix the errors to continue."),
      ),
    );
    mounts.forEach((mount) => mount());
  }

  // 3. Name and hyperparameters.
  function rangeText(h) {
    const whole = h.integer ? ", whole numbers" : "";
    if (h.maximum == null) return `${h.minimum} or more${whole}`;
    return (h.exclusive_minimum ? `more than ${h.minimum} and up to ${h.maximum}` : `${h.minimum} to ${h.maximum}`) + whole;
  }

  function problemWith(h, text) {
    const v = Number(text);
    if (text.trim() === "" || !isFinite(v)) return "Enter a number.";
    if (h.integer && !Number.isInteger(v)) return "Enter a whole number.";
    const low = h.exclusive_minimum ? v <= h.minimum : v < h.minimum;
    if (low || (h.maximum != null && v > h.maximum)) return `Allowed: ${rangeText(h)}.`;
    return null;
  }

  async function settingsStep(panel) {
    const d = state.dataset;
    state.modelName ||= `${d.name}-ft`;
    const nameInput = el("input", { type: "text", id: "model-name", required: true, maxlength: "256", value: state.modelName, oninput: () => (state.modelName = nameInput.value) });
    const baseSelect = el("select", { id: "base-model" });
    const fields = el("div", { class: "hyper" }, loading("Loading the defaults…"));
    const status = el("div", { "aria-live": "polite" });
    const inputs = [];
    const form = el(
      "form",
      { novalidate: true },
      el(
        "div",
        { class: "grid" },
        el("div", { class: "field" }, el("label", { for: "model-name" }, "Model name"), nameInput, el("p", { class: "help" }, "Shown in lists. The model's id is made for it.")),
        el("div", { class: "field" }, el("label", { for: "base-model" }, "Base model"), baseSelect, el("p", { class: "help" }, "The model to start from: the default, or one you fine-tuned before.")),
      ),
      el("h3", {}, "Hyperparameters"),
      el("p", { class: "muted small" }, "The defaults suit the base model and the size of this dataset."),
      fields,
      status,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "ghost", onclick: () => go(1) }, "Back"),
        el("button", { type: "button", class: "ghost", onclick: () => { state.values = {}; state.targets = ""; state.checkpointing = false; state.export = "merged"; loadDefaults(); } }, "Reset to defaults"),
        el("button", { type: "submit" }, "Continue"),
      ),
    );
    panel.append(form);

    async function loadDefaults() {
      fields.replaceChildren(loading("Loading the defaults…"));
      try {
        state.hyper = await api.hyperparameters(d.id, state.base);
      } catch (e) {
        fields.replaceChildren(errorBox("Could not load the hyperparameters", e, loadDefaults));
        return;
      }
      inputs.length = 0;
      fields.replaceChildren(
        ...state.hyper.hyperparameters.map((h) => {
          const id = `hp-${h.name}`;
          const invalid = el("p", { class: "invalid", id: `${id}-invalid` });
          const input = el("input", {
            type: "number",
            id,
            name: h.name,
            step: h.integer ? "1" : "any",
            min: String(h.minimum),
            max: h.maximum == null ? null : String(h.maximum),
            value: String(state.values[h.name] ?? h.default),
            "aria-describedby": `${id}-help ${id}-range ${id}-invalid`,
          });
          const check = () => {
            const problem = problemWith(h, input.value);
            invalid.textContent = problem || "";
            input.setAttribute("aria-invalid", String(!!problem));
            if (!problem) state.values[h.name] = Number(input.value);
            return !problem;
          };
          input.addEventListener("input", check);
          inputs.push(check);
          return el(
            "div",
            { class: "field" },
            el("label", { for: id }, el("code", {}, h.name)),
            input,
            el("p", { class: "help", id: `${id}-help` }, h.description),
            el("p", { class: "help", id: `${id}-range` }, `Default ${h.default}. Allowed: ${rangeText(h)}.`),
            invalid,
          );
        }),
        targetsField(),
        checkpointingField(),
        exportField(),
      );
    }

    // The settings that are not numbers: which projections get LoRA adapters, gradient
    // checkpointing, and what a LoRA run registers.
    function targetsField() {
      const id = "hp-lora_target_modules";
      const input = el("input", {
        type: "text",
        id,
        name: "lora_target_modules",
        placeholder: "every attention and feed-forward projection",
        value: state.targets,
        "aria-describedby": `${id}-help`,
        oninput: () => (state.targets = input.value.trim()),
      });
      return el(
        "div",
        { class: "field" },
        el("label", { for: id }, el("code", {}, "lora_target_modules")),
        input,
        el("p", { class: "help", id: `${id}-help` }, "With lora_rank: the modules that get adapters, comma-separated, as PEFT's target_modules names them (query,value for BERT; Wqkv for ModernBERT). Empty: all of them."),
      );
    }

    function checkpointingField() {
      const id = "hp-gradient_checkpointing";
      const input = el("input", {
        type: "checkbox",
        id,
        name: "gradient_checkpointing",
        checked: state.checkpointing,
        "aria-describedby": `${id}-help`,
        onchange: () => (state.checkpointing = input.checked),
      });
      return el(
        "div",
        { class: "field" },
        el("label", { for: id }, el("code", {}, "gradient_checkpointing")),
        input,
        el("p", { class: "help", id: `${id}-help` }, "Keep only each layer's input and compute the layer again for the backward pass: far less memory for about one more forward pass, with the same result. Off by default."),
      );
    }

    function exportField() {
      const id = "hp-export";
      const select = el(
        "select",
        { id, name: "export", "aria-describedby": `${id}-help`, onchange: () => (state.export = select.value) },
        ["merged", "adapter"].map((v) => el("option", { value: v, selected: v === state.export }, v)),
      );
      return el(
        "div",
        { class: "field" },
        el("label", { for: id }, el("code", {}, "export")),
        select,
        el("p", { class: "help", id: `${id}-help` }, "With lora_rank: merged registers a plain checkpoint with the adapters folded into the base's weights; adapter registers a PEFT adapter directory, a small fraction of the size, served over the base. Default merged."),
      );
    }

    try {
      const models = await servedModels();
      state.base ||= models.find((m) => m.default_endpoints.length)?.name || "";
      baseSelect.replaceChildren(...models.map((m) => el("option", { value: m.name, selected: m.name === state.base }, m.display_name ? `${m.display_name} (${m.name})` : m.name)));
    } catch (e) {
      status.replaceChildren(errorBox("Could not list the base models", e));
    }
    baseSelect.addEventListener("change", () => {
      state.base = baseSelect.value;
      loadDefaults();
    });
    await loadDefaults();

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const allValid = inputs.map((check) => check()).every(Boolean);
      state.modelName = nameInput.value.trim();
      if (!state.modelName) {
        nameInput.setAttribute("aria-invalid", "true");
        nameInput.focus();
        return status.replaceChildren(errorBox("Give the model a name."));
      }
      if (!state.hyper || !allValid) return status.replaceChildren(errorBox("Correct the hyperparameters marked above."));
      go(3);
    });
  }

  // 4. Start training.
  function startStep(panel) {
    const d = state.dataset;
    const m = d.metrics?.finetune_dataset_metrics?.reranker_data_metrics;
    const status = el("div", { "aria-live": "polite" });
    const values = Object.fromEntries(state.hyper.hyperparameters.map((h) => [h.name, state.values[h.name] ?? h.default]));
    // Only what differs from the defaults is sent: the server fills in the rest, and some
    // defaults depend on other settings (LoRA's learning rate is ten times the one shown).
    const changed = Object.fromEntries(state.hyper.hyperparameters.filter((h) => values[h.name] !== h.default).map((h) => [h.name, values[h.name]]));
    if (state.targets) changed.lora_target_modules = state.targets;
    if (state.checkpointing) changed.gradient_checkpointing = true;
    if (state.export !== "merged") changed.export = state.export;
    const pair = (term, value) => [el("dt", {}, term), el("dd", {}, value)];
    const start = el("button", { type: "button", onclick: submit }, "Start training");
    panel.append(
      el(
        "dl",
        { class: "meta" },
        pair("Model name", state.modelName),
        pair("Base model", `${state.hyper.base_model} (${state.hyper.kind})`),
        pair("Dataset", d.name),
        m ? pair("Queries", `${count(m.num_train_queries)} for training, ${m.num_eval_queries ? count(m.num_eval_queries) + " for validation" : "a tenth held out for validation"}`) : null,
        state.hyper.hyperparameters.map((h) =>
          pair(h.name, el("span", { class: values[h.name] === h.default ? "" : "changed" }, String(values[h.name]), values[h.name] === h.default ? " (default)" : ` (default ${h.default})`)),
        ),
        state.targets ? pair("lora_target_modules", el("span", { class: "changed" }, state.targets)) : null,
        state.checkpointing ? pair("gradient_checkpointing", el("span", { class: "changed" }, "on")) : null,
        state.export !== "merged" ? pair("export", el("span", { class: "changed" }, state.export)) : null,
      ),
      el("p", { class: "muted" }, "Training runs on this server, one job at a time. The model page shows its progress live."),
      status,
      el("div", { class: "actions" }, el("button", { type: "button", class: "ghost", onclick: () => go(2) }, "Back"), start),
    );

    async function submit() {
      start.disabled = true;
      status.replaceChildren(loading("Starting…"));
      try {
        const { finetuned_model: job } = await api.createJob({
          name: state.modelName,
          settings: { base_model: { base_type: "BASE_TYPE_RERANK", name: state.base }, dataset_id: d.id, hyperparameters: changed },
        });
        toast(`Training ${job.name}`);
        location.hash = `#/models/${encodeURIComponent(job.id)}`;
      } catch (e) {
        status.replaceChildren(errorBox("Training could not start", e));
        start.disabled = false;
      }
    }
  }

  go(0, false);
}

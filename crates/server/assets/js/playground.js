// The playground: rank pasted documents for a query with one model, or with two side by side.
import { api, servedModels } from "./api.js";
import { el, errorBox, fixed, loading } from "./ui.js";

const EXAMPLE = {
  query: "What is the capital of the United States?",
  documents: [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Washington, D.C. (also known as simply Washington or D.C.) is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
  ],
};

function ranking(model, response, documents) {
  return el(
    "ol",
    { class: "ranked", "aria-label": `Ranking by ${model}` },
    response.results.map((r, i) => {
      const fill = el("span");
      // A score is a probability-like value in [0, 1]; the bar shows it as a share of the width.
      fill.style.width = `${Math.min(100, Math.max(0, r.relevance_score * 100))}%`;
      return el(
        "li",
        {},
        el("span", { class: "rank" }, String(i + 1)),
        el("div", { class: "score" }, el("span", { class: "value" }, fixed(r.relevance_score, 4)), el("div", { class: "bar", "aria-hidden": "true" }, fill)),
        el("div", { class: "doc" }, el("span", {}, documents[r.index]), el("span", { class: "small muted" }, ` · document ${r.index + 1}`)),
      );
    }),
  );
}

export async function playgroundPage(root, ctx, params) {
  document.title = "Playground · finerank";
  const modelA = el("select", { id: "model-a" });
  const modelB = el("select", { id: "model-b" });
  const compare = el("input", { type: "checkbox", id: "compare" });
  const second = el("div", { class: "field", hidden: true }, el("label", { for: "model-b" }, "Second model"), modelB);
  const query = el("input", { type: "text", id: "query", required: true, placeholder: "Type a query" });
  const documents = el("textarea", { id: "documents", rows: "8", required: true, placeholder: "One document a line" });
  const docCount = el("p", { class: "help", id: "documents-help" }, "One document a line.");
  documents.setAttribute("aria-describedby", docCount.id);
  const submit = el("button", { type: "submit" }, "Rank");
  const results = el("div", { "aria-live": "polite" });
  const form = el(
    "form",
    { class: "card", novalidate: true },
    el(
      "div",
      { class: "grid" },
      el("div", { class: "field" }, el("label", { for: "model-a" }, "Model"), modelA),
      second,
    ),
    el("div", { class: "field" }, el("label", { class: "check", for: "compare" }, compare, "Compare with a second model, side by side")),
    el("div", { class: "field" }, el("label", { for: "query" }, "Query"), query),
    el("div", { class: "field" }, el("label", { for: "documents" }, "Documents"), documents, docCount),
    el(
      "div",
      { class: "actions" },
      submit,
      el("button", { type: "button", class: "ghost", onclick: fillExample }, "Fill in an example"),
    ),
  );
  root.append(
    el("div", { class: "page-head" }, el("div", {}, el("h1", {}, "Playground"), el("p", {}, "Rank documents for a query, and compare two models on the same input."))),
    form,
    results,
  );

  const lines = () => documents.value.split("\n").map((l) => l.trim()).filter(Boolean);
  const countDocs = () => (docCount.textContent = `One document a line: ${lines().length} so far.`);
  function fillExample() {
    query.value = EXAMPLE.query;
    documents.value = EXAMPLE.documents.join("\n");
    countDocs();
  }
  documents.addEventListener("input", countDocs);
  compare.addEventListener("change", () => (second.hidden = !compare.checked));

  try {
    const models = await servedModels();
    const options = (select) =>
      select.replaceChildren(...models.map((m) => el("option", { value: m.name }, m.display_name ? `${m.display_name} (${m.name})` : m.name)));
    options(modelA);
    options(modelB);
    const wanted = params.get("model");
    if (wanted && models.some((m) => m.name === wanted)) modelA.value = wanted;
    // Compared against the default model unless the user picks another.
    modelB.value = models.find((m) => m.default_endpoints.length)?.name || models[0]?.name;
  } catch (e) {
    results.replaceChildren(errorBox("Could not list the models", e));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const docs = lines();
    const q = query.value.trim();
    if (!q) {
      query.focus();
      return results.replaceChildren(errorBox("Type a query."));
    }
    if (!docs.length) {
      documents.focus();
      return results.replaceChildren(errorBox("Paste at least one document, one a line."));
    }
    const selects = compare.checked ? [modelA, modelB] : [modelA];
    const models = selects.map((s) => s.value);
    const titles = selects.map((s) => s.selectedOptions[0]?.textContent || s.value);
    submit.disabled = true;
    results.replaceChildren(loading("Ranking…"));
    const answers = await Promise.allSettled(models.map((m) => api.rerank(m, q, docs)));
    submit.disabled = false;
    if (!ctx.active) return;
    results.replaceChildren(
      el(
        "div",
        { class: "results" },
        answers.map((a, i) =>
          el(
            "section",
            { class: "card" },
            el("h2", { class: "cell-text" }, titles[i]),
            a.status === "fulfilled" ? ranking(models[i], a.value, docs) : errorBox("This model could not rank the documents", a.reason),
          ),
        ),
      ),
    );
  });
}

// The server's HTTP API, as the dashboard uses it. Paths are relative to the page, so a server
// behind a path prefix works too.

// Shared with the /docs page, so a key entered in one is used by the other.
const KEY = "finerank-key";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = () => sessionStorage.getItem(KEY) || "";
export const setApiKey = (key) => sessionStorage.setItem(KEY, key.trim());

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: "Bearer " + key } : {};
}

// Every error body is {"message"}; anything else (a proxy's page) is reported by its status.
function result(status, statusText, text) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (status >= 200 && status < 300) return body;
  const message = (body && body.message) || `${status} ${statusText || "error"}`;
  if (status === 401) window.dispatchEvent(new CustomEvent("finerank:unauthorized", { detail: message }));
  throw new ApiError(status, message);
}

async function call(path, { method = "GET", json } = {}) {
  const headers = authHeaders();
  if (json !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  } catch (e) {
    throw new ApiError(0, `The server did not answer (${e.message}). Is finerank serve still running?`);
  }
  return result(response.status, response.statusText, await response.text());
}

// XMLHttpRequest rather than fetch: only it reports upload progress, and datasets can be large.
function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
    xhr.addEventListener("load", () => {
      try {
        resolve(result(xhr.status, xhr.statusText, xhr.responseText));
      } catch (e) {
        reject(e);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "The upload failed: the server did not answer.")));
    xhr.send(form);
  });
}

const q = encodeURIComponent;
const job = (id) => `v1/finetuning/finetuned-models/${q(id)}`;

export const api = {
  models: () => call("v1/models?page_size=1000"),
  model: (name) => call(`v1/models/${q(name)}`),
  jobs: () => call(`v1/finetuning/finetuned-models?page_size=1000&order_by=${q("created_at desc")}`),
  job: (id) => call(job(id)),
  events: (id) => call(`${job(id)}/events?page_size=1000&order_by=created_at`),
  stepMetrics: (id) => call(`${job(id)}/training-step-metrics?page_size=1000`),
  losses: (id, afterStep) => call(`${job(id)}/training-losses?after_step=${afterStep}`),
  deleteJob: (id) => call(job(id), { method: "DELETE" }),
  createJob: (body) => call("v1/finetuning/finetuned-models", { method: "POST", json: body }),
  hyperparameters: (datasetId, baseModel) =>
    call(`v1/finetuning/hyperparameters?dataset_id=${q(datasetId)}&base_model=${q(baseModel)}`),
  dataset: (id) => call(`v1/datasets/${q(id)}`),
  // `files`: {train, valid?, corpus?}; `mine`: mine hard negatives from the corpus.
  createDataset(name, { train, valid, corpus }, mine, onProgress) {
    const form = new FormData();
    form.append("data", train, train.name);
    if (valid) form.append("eval_data", valid, valid.name);
    if (corpus) form.append("corpus", corpus, corpus.name);
    const mining = mine ? "&mine_negatives=true" : "";
    return upload(`v1/datasets?name=${q(name)}&type=reranker-finetune-input${mining}`, form, onProgress);
  },
  rerank: (model, query, documents) => call("v2/rerank", { method: "POST", json: { model, query, documents } }),
};

// The base models a fine-tune or a rerank can name: the default model and the ready fine-tuned
// ones. Aliases are left out: each answers as a model already listed.
export async function servedModels() {
  const { models } = await api.models();
  return models.filter((m) => !m.alias_of);
}

// The dashboard end to end, in headless Chromium (Debian's /usr/bin/chromium) driven by
// Playwright: the flow of Cohere's dashboard tutorial against a real `finerank serve` on a
// temporary data dir. Upload a training and a validation set, review them, see a bad file refused
// at its line, upload them again with their corpus and mine hard negatives from it, set
// hyperparameters, train a tiny model until it is ready, with its retrieval figures on the
// corpus, read its id on the API tab, rerank with it in the playground, then delete it. Also: user text containing markup is
// shown as text, the pages fit a phone's width, and nothing logs a console error or fails a
// request along the way.
//
// Usage: node dashboard.mjs BINARY WORK_DIR OUT_DIR
//   WORK_DIR/data holds train.jsonl and valid.jsonl (`finerank prepare` of CaseHOLD); the files
//   the test uploads and the server's data dir are made in WORK_DIR.
//   OUT_DIR receives a screenshot of each page and the server's log.
// Prints one line per check ("ok", "FAIL" or "skip") and "browser: N passed, M failed, K skipped".
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [binary, work, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node dashboard.mjs BINARY WORK_DIR OUT_DIR");
  process.exit(2);
}
const API_KEY = "browser-key";
// Tiny data and three optimizer steps: training takes well under a minute on two cores.
const TRAIN_ROWS = 24;
const VALID_ROWS = 12;
const SERVER_FLAGS = [
  "--max-train-steps", "3", "--train-max-length", "128",
  "--min-train-queries", "16", "--min-eval-queries", "8", "--api-key", API_KEY,
];
const READY_TIMEOUT_MS = 600_000;
const LAPTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
// Markup in user text: shown as text it is harmless; run or parsed, it sets window.__xss or
// requests /x, and the checks below see either.
const XSS_DATASET = `<img src=x onerror="window.__xss='dataset'"> legal <script>window.__xss='dataset'</script>`;
const XSS_MODEL = `<script>window.__xss='model'</script>casehold-ft`;
const XSS_DOCUMENT = `<b onmouseover="window.__xss='document'">bold?</b> <script>window.__xss='document'</script>`;

// Files the test uploads: the first rows of the prepared sets, and a training file with a
// malformed line 3.
const files = join(work, "upload");
mkdirSync(files, { recursive: true });
const lines = (name, n) => readFileSync(join(work, "data", name), "utf8").split("\n").filter(Boolean).slice(0, n);
const trainLines = lines("train.jsonl", TRAIN_ROWS);
const trainFile = join(files, "train.jsonl");
const validFile = join(files, "valid.jsonl");
const badFile = join(files, "bad-train.jsonl");
writeFileSync(trainFile, trainLines.join("\n") + "\n");
writeFileSync(validFile, lines("valid.jsonl", VALID_ROWS).join("\n") + "\n");
const bad = [...trainLines];
bad[2] = '{"query": "what does the lease say", "relevant_passages": ["rent is due monthly"]';
writeFileSync(badFile, bad.join("\n") + "\n");
const firstQuery = JSON.parse(trainLines[0]).query;
// The corpus the passages come from: every passage of both sets, once, as BEIR's corpus.jsonl.
const corpusFile = join(files, "corpus.jsonl");
const passages = new Set(
  [...trainLines, ...lines("valid.jsonl", VALID_ROWS)].flatMap((l) => {
    const row = JSON.parse(l);
    return [...row.relevant_passages, ...(row.hard_negatives || [])];
  }),
);
writeFileSync(corpusFile, [...passages].map((text, i) => JSON.stringify({ _id: `d${i}`, title: "", text })).join("\n") + "\n");

// The server.
const freePort = () =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

async function startServer() {
  const port = await freePort();
  const log = openSync(join(out, "server.log"), "a");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FINERANK_")));
  const args = ["--device", "cpu", "serve", "--data-dir", join(work, "server"), "--port", String(port), ...SERVER_FLAGS];
  const proc = spawn(binary, args, { stdio: ["ignore", log, log], env });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`finerank serve exited with ${proc.exitCode}; see ${out}/server.log`);
    try {
      if ((await fetch(url + "/health")).ok) return { proc, url };
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  proc.kill("SIGKILL");
  throw new Error(`finerank serve did not answer /health within 180 s; see ${out}/server.log`);
}

// Named checks that run in order. A failed check takes a screenshot; the checks after it are
// skipped, since each builds on the one before.
const results = { passed: 0, failed: 0, skipped: 0 };
let broken = false;
let current = "start";
let page;

async function check(name, body) {
  if (broken) {
    results.skipped++;
    console.log(`skip browser: ${name}`);
    return;
  }
  current = name;
  const started = Date.now();
  try {
    await body();
    results.passed++;
    console.log(`ok   browser: ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.failed++;
    broken = true;
    console.log(`FAIL browser: ${name}\n${e.stack || e}`);
    await page?.screenshot({ path: join(out, "FAILED.png"), fullPage: true }).catch(() => {});
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

let shot = 0;
async function screenshot(name) {
  shot++;
  await page.screenshot({ path: join(out, `${String(shot).padStart(2, "0")}-${name}.png`), fullPage: true });
}

// Console errors, page errors, failed requests and error responses, with the check they came in.
// Only the first check expects some: the API's 401s before the key is entered.
const problems = [];
let expectUnauthorized = false;
function watch(p) {
  const note = (what) => problems.push(`[${current}] ${what}`);
  p.on("console", (m) => {
    const unauthorized = expectUnauthorized && /status of 401/.test(m.text());
    if (m.type() === "error" && !unauthorized) note(`console error: ${m.text()}`);
  });
  p.on("pageerror", (e) => note(`uncaught: ${e.message}`));
  p.on("requestfailed", (r) => note(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  p.on("response", (r) => {
    if (r.status() >= 400 && !(expectUnauthorized && r.status() === 401)) note(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
}

const started = Date.now();
const server = await startServer();
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium" });
const context = await browser.newContext({ viewport: LAPTOP });
page = await context.newPage();
page.setDefaultTimeout(30_000);
watch(page);
const main = page.locator("main");
let modelId = null;

try {
  await check("1. the dashboard asks for the API key, then lists the base model", async () => {
    expectUnauthorized = true;
    await page.goto(server.url + "/");
    await page.getByText("This server needs an API key").waitFor();
    await page.getByLabel("API key").fill(API_KEY);
    await page.getByRole("button", { name: "Save key" }).click();
    const row = main.getByRole("row").filter({ hasText: "all-MiniLM-L6-v2" });
    await row.getByText("Ready").waitFor();
    expect(await page.locator("#key-panel").isHidden(), "the key panel stays open");
    expectUnauthorized = false;
    await screenshot("models");
  });

  await check("2. upload a training and a validation set", async () => {
    await page.getByRole("link", { name: "Create model" }).click();
    await main.getByRole("heading", { name: "Step 1: Upload data" }).waitFor();
    await page.locator("#file-train").setInputFiles(trainFile);
    await page.locator("#file-valid").setInputFiles(validFile);
    const name = page.getByLabel("Dataset name");
    expect((await name.inputValue()) === "train", "the dataset name does not default to the file's name");
    await name.fill(XSS_DATASET);
    await main.getByText("valid.jsonl ·").waitFor();
    await screenshot("upload");
    await main.getByRole("button", { name: "Upload and review" }).click();
  });

  await check("3. review: statistics, length histogram, first rows", async () => {
    await main.getByRole("heading", { name: "Step 2: Review data" }).waitFor({ timeout: 120_000 });
    await main.getByText("The data can be used for training").waitFor();
    const train = main.getByRole("region", { name: "Training set" });
    const valid = main.getByRole("region", { name: "Validation set" });
    const stat = (section, term) => section.locator("dl.stats div").filter({ has: page.locator("dt", { hasText: term }) }).locator("dd").textContent();
    expect((await stat(train, "Queries")) === String(TRAIN_ROWS), `training queries: ${await stat(train, "Queries")}`);
    expect((await stat(valid, "Queries")) === String(VALID_ROWS), `validation queries: ${await stat(valid, "Queries")}`);
    expect(Number(await stat(train, "Avg hard negatives")) > 0, "no hard negatives counted");
    expect((await train.locator(".chart canvas").count()) > 0, "no histogram drawn");
    await train.getByText("The model reads 128 tokens of a pair").waitFor();
    await train.getByText(firstQuery.slice(0, 40)).first().waitFor();
    // The dataset's name, markup and all, as text.
    await main.getByText(XSS_DATASET, { exact: true }).waitFor();
    await screenshot("review");
  });

  await check("4. a file with an error is refused, with its line number and a fix", async () => {
    await main.getByRole("button", { name: "Back: upload other files" }).click();
    await main.getByRole("button", { name: "Remove validation set" }).click();
    await page.locator("#file-train").setInputFiles(badFile);
    await main.getByRole("button", { name: "Upload and review" }).click();
    await main.getByRole("heading", { name: "Step 2: Review data" }).waitFor({ timeout: 120_000 });
    await main.getByText("this data cannot be used for training").waitFor();
    const problem = main.locator("tr.problem-error").first();
    await problem.getByText("line 3", { exact: true }).waitFor();
    expect((await problem.locator("td").nth(1).textContent()) === "bad-train.jsonl", "the problem does not name the uploaded file");
    expect(((await problem.locator("td").nth(4).textContent()) || "").length > 5, "no suggested fix");
    expect(await main.getByRole("button", { name: "Continue" }).isDisabled(), "a file with errors can go on");
    await screenshot("review-refused");
  });

  await check("5. the good files again, with their corpus, mining hard negatives from it", async () => {
    await main.getByRole("button", { name: "Back: upload other files" }).click();
    await page.locator("#file-train").setInputFiles(trainFile);
    await page.locator("#file-valid").setInputFiles(validFile);
    await page.locator("#file-corpus").setInputFiles(corpusFile);
    await page.getByLabel("Mine hard negatives from the corpus").check();
    await main.getByRole("button", { name: "Upload and review" }).click();
    await main.getByText("The data can be used for training").waitFor({ timeout: 120_000 });
    const mining = main.getByRole("region", { name: "Mining" });
    await mining.getByText("Hard negatives mined from the corpus").waitFor();
    const stat = (term) => mining.locator("dl.stats div").filter({ has: page.locator("dt", { hasText: term }) }).locator("dd").textContent();
    await mining.getByText("Candidates from dense, scored by bi-encoder all-MiniLM-L6-v2.").waitFor();
    expect(Number(await stat("Negatives per query")) > 0, "no negatives mined");
    await screenshot("review-mined");
    await main.getByRole("button", { name: "Continue" }).click();
  });

  await check("6. name and hyperparameters: defaults, explanations, ranges", async () => {
    await main.getByRole("heading", { name: "Step 3: Name and hyperparameters" }).waitFor();
    const epochs = page.getByLabel("train_epochs");
    await page.waitForFunction(() => document.querySelector("#hp-train_epochs")?.value === "4");
    await main.getByText("Default 4. Allowed: 1 to 100, whole numbers.").waitFor();
    await main.getByText("Passes over the training data").waitFor();
    for (const name of ["learning_rate", "train_batch_size", "early_stopping_patience", "early_stopping_threshold", "lora_rank", "lora_alpha", "lora_dropout", "frozen_layers", "micro_batch_size"]) {
      expect((await page.getByLabel(name).inputValue()) !== "", `${name} shows no default`);
    }
    await page.getByLabel("lora_target_modules").waitFor();
    // Trained with gradient checkpointing, so that the job runs the recompute end to end.
    const checkpointing = page.getByLabel("gradient_checkpointing");
    expect(!(await checkpointing.isChecked()), "gradient_checkpointing is on by default");
    await checkpointing.check();
    await epochs.fill("0");
    await main.getByText("Allowed: 1 to 100, whole numbers.", { exact: true }).waitFor();
    await main.getByRole("button", { name: "Continue" }).click();
    await main.getByText("Correct the hyperparameters marked above.").waitFor();
    await epochs.fill("1");
    await page.getByLabel("train_batch_size").fill("8");
    await page.getByLabel("Model name").fill(XSS_MODEL);
    await screenshot("hyperparameters");
    await main.getByRole("button", { name: "Continue" }).click();
    await main.getByRole("heading", { name: "Step 4: Start training" }).waitFor();
    await main.getByText("1 (default 4)").waitFor();
    const summary = main.locator("dl.meta");
    await summary.getByText("gradient_checkpointing", { exact: true }).waitFor();
    await screenshot("start");
    await main.getByRole("button", { name: "Start training" }).click();
  });

  await check("7. the model page follows training live until the status is Ready", async () => {
    await page.waitForURL(/#\/models\/[0-9a-f-]{36}$/);
    await main.getByRole("heading", { name: "Status" }).waitFor();
    // Caught after its first step unless the machine trains faster than the page polls; the
    // curves then fill in live.
    const stepped = main.getByText(/^Step [1-9]\d* of \d+/);
    const ready = main.locator(".page-head").getByText("Ready", { exact: true });
    await stepped.or(ready).waitFor({ timeout: READY_TIMEOUT_MS });
    if (await stepped.isVisible()) await screenshot("model-training");
    await ready.waitFor({ timeout: READY_TIMEOUT_MS });
    const timeline = main.getByRole("list", { name: "Status history" });
    for (const status of ["Queued", "Training", "Deploying", "Ready"]) await timeline.getByText(status, { exact: true }).waitFor();
    const metrics = main.getByRole("table", { name: "Validation metrics against the base model" });
    for (const metric of ["Accuracy@1", "Accuracy@3", "MRR@10", "nDCG@10"]) await metrics.getByText(metric, { exact: true }).waitFor();
    expect((await metrics.locator(".delta").count()) === 4, "the differences are not shown");
    const retrieval = main.getByRole("table", { name: "Retrieval on the corpus against the base model" });
    for (const system of ["BM25 alone", "Base model (all-MiniLM-L6-v2)", "Fine-tuned"]) await retrieval.getByText(system, { exact: true }).waitFor();
    expect(/p = /.test(await retrieval.locator("tr", { hasText: "Fine-tuned" }).textContent()), "no paired difference from the base");
    await main.getByText("also chose the checkpoint", { exact: false }).waitFor();
    // The run used what the form asked for.
    await main.locator("li", { hasText: "gradient_checkpointing" }).getByText("true", { exact: false }).waitFor();
    // Hovering a curve shows the value under the cursor: the charts have data.
    for (const chart of ["Training loss per step", "Validation metrics per evaluation"]) {
      const box = main.getByRole("img", { name: chart });
      await box.locator(".u-over").hover({ position: { x: 5, y: 20 } });
      const value = await box.locator(".u-legend .u-series:nth-child(2) .u-value").textContent();
      expect(value && value !== "—", `${chart}: no data under the cursor (${value})`);
    }
    await page.mouse.move(0, 0);
    await screenshot("model");
  });

  await check("8. the API tab shows the model id and ready-to-copy examples", async () => {
    await main.getByRole("tab", { name: "API" }).click();
    modelId = await main.locator(".id-row code").textContent();
    expect(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-ft$/.test(modelId), `model id ${modelId}`);
    expect(page.url().includes(modelId.replace(/-ft$/, "")), "the id is not this page's model");
    const code = await main.locator("pre").allTextContents();
    expect(code.length === 3 && code.every((c) => c.includes(modelId)), "the examples do not all name the model");
    expect(code[0].includes("/v2/rerank") && code[0].includes("Authorization: Bearer"), "curl example");
    expect(code[1].includes("cohere.ClientV2(base_url=") && code[1].includes(server.url), "python example");
    expect(code[2].includes("/rerank") && code[2].includes("--default-model"), "TEI example");
    await screenshot("api");
  });

  await check("9. the playground ranks with the fine-tuned model, beside the base model", async () => {
    await main.getByRole("link", { name: "Try it in the playground" }).click();
    await main.getByRole("heading", { name: "Playground" }).waitFor();
    await page.waitForFunction((id) => document.querySelector("#model-a")?.value === id, modelId);
    await page.getByLabel("Compare with a second model").check();
    await page.getByLabel("Second model", { exact: true }).selectOption("all-MiniLM-L6-v2");
    await main.getByRole("button", { name: "Fill in an example" }).click();
    const documents = page.getByLabel("Documents");
    await documents.fill((await documents.inputValue()) + "\n" + XSS_DOCUMENT);
    await main.getByRole("button", { name: "Rank" }).click();
    for (const model of [modelId, "all-MiniLM-L6-v2"]) {
      const ranking = main.getByRole("list", { name: `Ranking by ${model}` });
      await ranking.waitFor();
      expect((await ranking.getByRole("listitem").count()) === 5, `${model}: not every document ranked`);
      expect((await ranking.locator(".bar span").count()) === 5, `${model}: no bars`);
      const scores = (await ranking.locator(".score .value").allTextContents()).map(Number);
      expect(scores.every((s, i) => s >= 0 && s <= 1 && (i === 0 || s <= scores[i - 1])), `${model}: scores ${scores}`);
      await ranking.getByText(XSS_DOCUMENT, { exact: true }).waitFor();
    }
    await screenshot("playground");
  });

  await check("10. user text with markup shows as text and never runs", async () => {
    await page.getByRole("link", { name: "Models", exact: true }).click();
    await main.getByRole("link", { name: XSS_MODEL, exact: true }).waitFor();
    await main.getByRole("link", { name: XSS_MODEL, exact: true }).click();
    await main.getByRole("heading", { name: XSS_MODEL, exact: true }).waitFor();
    await main.getByText(`${XSS_DATASET} (`).waitFor();
    expect((await page.evaluate(() => window.__xss)) === undefined, "injected markup ran");
    expect((await page.locator("main script, main img[src=x], main b").count()) === 0, "user text became elements");
  });

  await check("11. pages fit a phone's width (390px)", async () => {
    await page.setViewportSize(PHONE);
    const fits = async (what) => {
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      expect(width <= PHONE.width, `${what} is ${width}px wide`);
    };
    await main.getByRole("tab", { name: "Overview" }).click();
    await fits("the model page");
    await screenshot("model-phone");
    await page.getByRole("link", { name: "Models", exact: true }).click();
    await main.getByRole("link", { name: XSS_MODEL, exact: true }).waitFor();
    await fits("the models page");
    await screenshot("models-phone");
    await page.getByRole("link", { name: "Playground" }).click();
    await main.getByRole("button", { name: "Fill in an example" }).click();
    await main.getByRole("button", { name: "Rank" }).click();
    await main.getByRole("list", { name: "Ranking by all-MiniLM-L6-v2" }).waitFor();
    await fits("the playground");
    await screenshot("playground-phone");
    await page.setViewportSize(LAPTOP);
  });

  await check("12. delete asks first, then removes the model", async () => {
    await page.goto(`${server.url}/#/models/${modelId.replace(/-ft$/, "")}`);
    await main.getByRole("heading", { name: XSS_MODEL, exact: true }).waitFor();
    await main.getByRole("button", { name: "Delete" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    await screenshot("delete");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    expect(await dialog.isHidden(), "cancel left the dialog open");
    expect(page.url().includes(modelId.replace(/-ft$/, "")), "cancel left the page");
    await main.getByRole("button", { name: "Delete" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Delete model" }).click();
    await page.waitForURL(/#\/models$/);
    await main.getByRole("row").filter({ hasText: "all-MiniLM-L6-v2" }).waitFor();
    expect((await main.getByText(XSS_MODEL).count()) === 0, "the deleted model is still listed");
  });

  await check("13. no console errors and no failed requests", async () => {
    expect(problems.length === 0, `${problems.length} problem(s):\n  ${problems.join("\n  ")}`);
  });
} finally {
  await browser.close();
  server.proc.kill("SIGTERM");
}

console.log(`browser tests took ${Math.round((Date.now() - started) / 1000)}s; screenshots in ${out}`);
console.log(`browser: ${results.passed} passed, ${results.failed} failed, ${results.skipped} skipped`);
process.exit(results.failed ? 1 : 0);

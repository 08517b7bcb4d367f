// The dashboard's entry point: a hash router (#/models, #/models/ID, #/create, #/playground)
// that renders one page at a time into <main>, and the API key panel.
import { apiKey, setApiKey } from "./api.js";
import { createPage } from "./create.js";
import { modelPage } from "./model.js";
import { modelsPage } from "./models.js";
import { playgroundPage } from "./playground.js";
import { el, errorBox } from "./ui.js";

const main = document.getElementById("main");
let page = null;

// What a page registers here (timers, charts) is undone when the user leaves it, so that a page
// no longer shown stops polling.
function pageContext() {
  const cleanups = [];
  const ctx = {
    active: true,
    onCleanup: (f) => cleanups.push(f),
    // Runs `step` now, then again `ms` after each run ends while the page is shown and `step`
    // resolves true.
    repeat(step, ms) {
      let timer;
      const run = async () => {
        if (ctx.active && (await step()) && ctx.active) timer = setTimeout(run, ms);
      };
      cleanups.push(() => clearTimeout(timer));
      run();
    },
    close() {
      ctx.active = false;
      cleanups.splice(0).forEach((f) => f());
    },
  };
  return ctx;
}

function notFound(root) {
  root.append(
    el("h1", {}, "Page not found"),
    el("p", {}, "There is no such page. ", el("a", { href: "#/models" }, "Go to the models"), "."),
  );
}

// "#/models/abc?x=1" -> the nav section it belongs to and the function that renders it.
function resolve(hash) {
  const [path, query] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  switch (parts[0] || "models") {
    case "models":
      if (parts.length <= 1) return ["models", modelsPage];
      return ["models", (root, ctx) => modelPage(root, ctx, decodeURIComponent(parts.slice(1).join("/")))];
    case "create":
      return ["create", createPage];
    case "playground":
      return ["playground", (root, ctx) => playgroundPage(root, ctx, params)];
    default:
      return [null, notFound];
  }
}

function render({ focus = true } = {}) {
  page?.close();
  page = pageContext();
  const [section, show] = resolve(location.hash);
  for (const link of document.querySelectorAll(".top nav a[data-section]")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = el("div");
  main.replaceChildren(root);
  const ctx = page;
  Promise.resolve()
    .then(() => show(root, ctx))
    .catch((e) => ctx.active && root.replaceChildren(errorBox("This page could not be shown", e, () => render())));
  window.scrollTo(0, 0);
  // Screen reader and keyboard users start at the new page, not at the link they followed.
  if (focus) main.focus({ preventScroll: true });
}

// The key panel: opened by its button, or by any request the server refused for want of a key.
const panel = document.getElementById("key-panel");
const toggle = document.getElementById("key-toggle");
const keyInput = document.getElementById("key-input");
const reason = document.getElementById("key-reason");
const defaultReason = reason.textContent;

function showPanel(open, why) {
  panel.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
  reason.textContent = why || defaultReason;
  if (open) {
    keyInput.value = apiKey();
    keyInput.focus();
  }
}

toggle.addEventListener("click", () => showPanel(panel.hidden));
panel.addEventListener("submit", (e) => {
  e.preventDefault();
  setApiKey(keyInput.value);
  showPanel(false);
  render();
});
window.addEventListener("finerank:unauthorized", (e) => {
  if (panel.hidden) showPanel(true, `This server needs an API key (${e.detail}). Enter one to go on.`);
});

window.addEventListener("hashchange", () => render());
render({ focus: false });

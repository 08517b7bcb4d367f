// Building blocks of the pages. Elements are made with createElement and text nodes only: every
// string, user data included, is shown as text and never parsed as HTML.

// el("a", {href: "#/x", class: "link", onclick: f}, "text", child, [more]): attributes are set
// as attributes, on* as listeners, and properties (hidden, disabled, value...) given a non-string
// value as properties. Children are nodes or strings; null, undefined and false are skipped.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (typeof value !== "string" && name in node) node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const loading = (text) => el("p", { class: "loading", role: "status" }, text);

export function errorBox(title, error, retry) {
  return el(
    "div",
    { class: "error-box", role: "alert" },
    el("strong", {}, title),
    error ? error.message || String(error) : null,
    retry ? el("div", { class: "actions" }, el("button", { type: "button", class: "ghost small", onclick: retry }, "Try again")) : null,
  );
}

const STATUS = {
  STATUS_QUEUED: ["Queued", "queued"],
  STATUS_FINETUNING: ["Training", "running"],
  STATUS_DEPLOYING_API: ["Deploying", "running"],
  STATUS_READY: ["Ready", "ready"],
  STATUS_FAILED: ["Failed", "failed"],
  STATUS_PAUSED: ["Paused", "queued"],
  queued: ["Queued", "queued"],
  processing: ["Validating", "processing"],
  validated: ["Validated", "validated"],
  failed: ["Failed", "failed"],
};

export const ACTIVE = ["STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_DEPLOYING_API"];
export const statusLabel = (status) => (STATUS[status] || [status])[0];
export const badge = (status) => el("span", { class: "badge " + ((STATUS[status] || [])[1] || "") }, statusLabel(status));

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export const fixed = (x, digits = 3) => (typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "—");
export const count = (n) => (typeof n === "number" ? n.toLocaleString() : "—");

// A difference, signed and coloured: better (up) or worse (down) than the base.
export function delta(diff, digits = 3) {
  if (typeof diff !== "number" || !isFinite(diff)) return el("span", {}, "—");
  const sign = diff > 0 ? "+" : diff < 0 ? "−" : "±";
  const cls = diff > 0 ? "delta up" : diff < 0 ? "delta down" : "delta";
  return el("span", { class: cls }, sign + Math.abs(diff).toFixed(digits));
}

// A table whose rows turn into labelled cards at phone width. `columns`: [{label, num}];
// `rows`: arrays of cells (strings or nodes).
export function table(columns, rows, { caption, className = "" } = {}) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "cards " + className },
      caption ? el("caption", { class: "sr-only" }, caption) : null,
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      el(
        "tbody",
        {},
        rows.map((row) =>
          el(
            "tr",
            { class: row.className },
            (row.cells || row).map((cell, i) =>
              el("td", { "data-label": columns[i].label, class: columns[i].num ? "num" : "cell-text" }, cell),
            ),
          ),
        ),
      ),
    ),
  );
}

let toastTimer;
export function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("show"), 3000);
}

// The clipboard API exists only on https and localhost; elsewhere the text is selected for the
// user to copy.
export async function copy(text, fallbackNode) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied to the clipboard");
  } catch {
    const range = document.createRange();
    range.selectNodeContents(fallbackNode);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    toast("Selected: press Ctrl+C (⌘C) to copy");
  }
}

export const copyButton = (text, node, label = "Copy") =>
  el("button", { type: "button", class: "ghost small copy", onclick: () => copy(text, node) }, label);

// Asks before something that cannot be undone; resolves true if confirmed. A native <dialog>
// traps focus and closes on Escape.
export function confirmDialog({ title, body, confirm }) {
  return new Promise((resolve) => {
    const dialog = el(
      "dialog",
      { "aria-labelledby": "confirm-title" },
      el("h2", { id: "confirm-title" }, title),
      el("p", {}, body),
      el(
        "form",
        { method: "dialog", class: "actions" },
        el("button", { value: "cancel", class: "ghost", autofocus: true }, "Cancel"),
        el("button", { value: "confirm", class: "danger solid" }, confirm),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export const modelLink = (id, text) => el("a", { href: "#/models/" + encodeURIComponent(id) }, text);

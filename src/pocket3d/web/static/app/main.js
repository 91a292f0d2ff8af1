// The app: sign-in (when the server checks keys), then three pages by the URL's hash: #/ (create, jobs and
// uploads), #/jobs/<id> (one job: the viewer), #/system.

import { api, auth } from "./api.js";
import { CreateForm, TABS } from "./create.js";
import { JobList } from "./jobs.js";
import { JobPage } from "./jobview.js";
import { SystemPage } from "./system.js";
import { bytes, fill, h, showError, when } from "./ui.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
let caller = null;
let models = null;
let page = null;  // what main shows now: has dispose()

async function start() {
  try {
    caller = await api("/me");
  } catch (error) {
    if (error.status === 401) return signIn("The key of this session was not accepted: sign in again.");
    return fill(main, h("section", { class: "panel" }, h("h2", {}, "The server did not answer"), errorSlot(error)));
  }
  if (!caller.owner_id) return signIn();
  drawWho();
  models = await api("/system/models");
  route();
}

function errorSlot(error) {
  const slot = h("div");
  showError(slot, error);
  return slot;
}

function drawWho() {
  fill(who, h("span", { class: "owner", title: caller.key_id ? `key ${caller.key_id}` : "auth is off on this server" },
    caller.auth_enabled ? `${caller.owner_id}'s jobs` : "local"),
    caller.role === "admin" && caller.auth_enabled ? h("span", { class: "tag" }, "admin") : null,
    caller.auth_enabled ? h("button", { type: "button", class: "button secondary small", onclick: signOut }, "Sign out") : null);
}

function signIn(message) {
  show(null);
  caller = null;
  fill(who);
  const input = h("input", { type: "password", id: "api-key", autocomplete: "off", required: true, spellcheck: "false",
    placeholder: "p3d_…" });
  const slot = h("div", { class: "slot-error", "aria-live": "polite" });
  const form = h("form", { class: "panel signin", onsubmit: async (e) => {
    e.preventDefault();
    auth.key = input.value.trim();
    try {
      caller = await api("/me");
    } catch (error) {
      auth.key = null;
      showError(slot, error.status === 401 ? { ...error, message: "That key is not valid, or it was revoked.",
        hint: error.hint, code: error.code, requestId: error.requestId } : error);
      input.focus();
      return;
    }
    drawWho();
    models = await api("/system/models");
    route();
  } },
  h("h2", {}, "Sign in"),
  h("p", {}, "This server asks for an API key. It is kept in this browser tab only, until you close it."),
  h("label", { for: "api-key", class: "label" }, "API key"), input,
  h("div", { class: "actions" }, h("button", { type: "submit", class: "button primary" }, "Sign in")), slot);
  if (message) showError(slot, { message });
  fill(main, form);
  input.focus();
}

function signOut() {
  auth.key = null;
  signIn();
}

window.addEventListener("pocket3d:unauthorized", () => {
  if (caller) signIn(auth.key ? "The key was not accepted any more: sign in again." : undefined);
});

function show(next) {
  page?.dispose?.();
  page = next;
}

function route() {
  if (!caller) return;
  const hash = location.hash.replace(/^#/, "") || "/";
  for (const a of document.querySelectorAll("nav a")) {
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#${hash.startsWith("/jobs/") ? "/" : hash.split("?")[0]}`);
  }
  const job = hash.match(/^\/jobs\/(job_[A-Za-z0-9]+)$/);
  if (job) {
    const next = new JobPage(job[1], { onChained: (id) => { location.hash = `#/jobs/${id}`; } });
    show(next);
    fill(main, next.element);
    document.title = "Job · pocket3d";
  } else if (hash === "/system") {
    const next = new SystemPage();
    show(next);
    fill(main, next.element);
    document.title = "System · pocket3d";
  } else {
    home(hash);
    document.title = "pocket3d";
  }
  main.focus({ preventScroll: true });
}

/** Create on the left, jobs on the right (stacked on a phone). #/create/<tab>?mesh=job_…/model.glb preselects. */
function home(hash) {
  const [path, query] = hash.split("?");
  const wanted = path.match(/^\/create\/(\w+)/)?.[1] || sessionStorage.getItem("pocket3d.tab") || "image";
  const jobs = new JobList();
  const forms = new Map(TABS.map((t) => [t.id, new CreateForm(t, { models, caller,
    onSubmitted: (jobId) => { jobs.add(jobId); uploads.reload(); } })]));
  const panel = h("div", { class: "tab-panel", role: "tabpanel", id: "create-panel" });
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "what to create" });
  const select = (id, focus) => {
    sessionStorage.setItem("pocket3d.tab", id);
    for (const b of tabs.children) {
      const on = b.dataset.tab === id;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
      if (on && focus) b.focus();
    }
    panel.setAttribute("aria-labelledby", `tab-${id}`);
    fill(panel, forms.get(id).form);
  };
  for (const t of TABS) {
    tabs.append(h("button", { type: "button", role: "tab", id: `tab-${t.id}`, "aria-controls": "create-panel",
      dataset: { tab: t.id }, onclick: () => select(t.id) }, t.label));
  }
  tabs.addEventListener("keydown", (e) => {
    const ids = TABS.map((t) => t.id);
    const at = ids.indexOf(document.activeElement?.dataset.tab);
    if (at < 0 || !["ArrowLeft", "ArrowRight"].includes(e.key)) return;
    e.preventDefault();
    select(ids[(at + (e.key === "ArrowRight" ? 1 : ids.length - 1)) % ids.length], true);
  });
  const tab = forms.has(wanted) ? wanted : "image";
  select(tab);
  const mesh = new URLSearchParams(query || "").get("mesh");
  if (mesh) forms.get(tab).useMesh(mesh, `${mesh} (a job's result)`);
  const uploads = new Uploads();
  const create = h("section", { class: "panel create", "aria-labelledby": "create-heading" },
    h("h2", { id: "create-heading" }, "Create"), tabs, panel, uploads.element);
  show({ dispose: () => jobs.dispose() });
  fill(main, h("div", { class: "home" }, create, jobs.element));
  jobs.reload();
  uploads.reload();
}

/** The owner's uploads that have not expired, each with a delete button. */
class Uploads {
  constructor() {
    this.list = h("ul", { class: "uploads" });
    this.error = h("div", { class: "slot-error" });
    this.summary = h("summary", {}, "Your uploads");
    this.element = h("details", { class: "uploads-box" }, this.summary, this.error, this.list);
  }

  async reload() {
    try {
      const page = await api("/files?limit=50");
      this.summary.textContent = `Your uploads (${page.files.length}${page.next_cursor ? "+" : ""})`;
      fill(this.list, page.files.map((f) => h("li", {},
        h("span", { class: "name" }, f.filename || f.file_id),
        h("span", { class: "muted" }, ` ${f.format.toUpperCase()} · ${bytes(f.size)} · until ${when(f.expires_at)}`),
        h("button", { type: "button", class: "button secondary small", "aria-label": `delete ${f.filename || f.file_id}`,
          onclick: async () => {
            try { await api(`/files/${f.file_id}`, { method: "DELETE" }); this.reload(); }
            catch (error) { showError(this.error, error); }
          } }, "Delete"))));
    } catch (error) {
      showError(this.error, error);
    }
  }
}

window.addEventListener("hashchange", route);
start();

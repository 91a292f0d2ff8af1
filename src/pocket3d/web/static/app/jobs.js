// Job cards and the job list. A card follows its job's events while it runs: stage by stage, percent, the model's
// messages and warnings, queue position and ETA, and a cancel button. The list is the server's (GET /jobs), newest
// first, filtered by status, a page at a time, so it survives a reload.

import { FINAL, api, fetchBlob, follow } from "./api.js";
import { FEATURE_NAMES, fill, h, seconds, showError, when } from "./ui.js";

const FOLLOWED_AT_ONCE = 3;  // SSE streams the list keeps open; a browser allows 6 connections a host
const POLL_MS = 3000;

/** What a job was about, in a few words: what it made, and from what. */
export function jobTitle(job) {
  const input = job.input || {};
  const images = (input.images || []).length + Object.keys(input.views || {}).length;
  const source = input.convert_of ? `in ${(input.output_formats || []).join(", ").toUpperCase()}`
    : input.mesh?.startsWith?.("job_") ? "of a job's result" : "";
  const made = {
    mesh_generation: images > 1 ? `Mesh from ${images} views` : images ? "Mesh from an image" : "Mesh",
    texture_generation: "Texture", segmentation: "Parts", auto_rigging: "Rig",
  }[job.feature] || job.feature;
  const prompt = input.text_prompt ? `“${input.text_prompt.length > 60 ? input.text_prompt.slice(0, 57) + "…" : input.text_prompt}”` : "";
  return [made, source, prompt].filter(Boolean).join(" ");
}

/** The preview image of a finished job as a blob: URL (fetched with the key), or null. */
const previews = new Map();
export async function previewUrl(job) {
  const preview = job.outputs?.find((o) => o.name === "preview.png");
  if (!preview) return null;
  if (!previews.has(job.job_id)) {
    previews.set(job.job_id, fetchBlob(preview.url).then((b) => URL.createObjectURL(b)).catch(() => null));
  }
  return previews.get(job.job_id);
}

export class JobCard {
  /** `onPage`: the card heads the job's own page (no link to it). */
  constructor(job, { onPage = false } = {}) {
    this.job = job;
    this.thumb = h("div", { class: "thumb-box" });
    this.title = onPage ? h("span", { class: "title" }) : h("a", { href: `#/jobs/${job.job_id}`, class: "title" });
    this.meta = h("div", { class: "muted meta" });
    this.status = h("span", { class: "status" });
    this.bar = h("progress", { max: 100, value: 0 });
    this.percent = h("span", { class: "percent" });
    this.stages = h("ol", { class: "stages" });
    this.message = h("div", { class: "message", "aria-live": "polite" });
    this.warnings = h("ul", { class: "warnings" });
    this.queue = h("div", { class: "muted queue" });
    this.error = h("div", { class: "slot-error" });
    this.cancel = h("button", { type: "button", class: "button secondary small", onclick: () => this.cancelJob() }, "Cancel");
    this.element = h("article", { class: "card", dataset: { jobId: job.job_id } },
      this.thumb,
      h("div", { class: "body" },
        h("header", {}, this.title, this.status), this.meta,
        h("div", { class: "progress-line" }, this.bar, this.percent),
        this.stages, this.message, this.warnings, this.queue, this.error,
        h("div", { class: "card-actions" }, this.cancel,
          onPage ? null : h("a", { href: `#/jobs/${job.job_id}`, class: "button secondary small" }, "Open"))));
    this.update(job);
  }

  update(job) {
    this.job = job;
    const el = this.element;
    el.dataset.status = job.status;
    this.title.textContent = jobTitle(job);
    this.meta.textContent = `${job.model} · ${when(job.created_at)}`;
    this.meta.title = job.job_id;
    this.status.textContent = job.cancel_requested && !FINAL.has(job.status) ? "cancelling" : job.status;
    this.status.className = `status ${job.status}`;
    this.bar.value = job.progress;
    this.bar.setAttribute("aria-label", `progress of ${job.job_id}`);
    this.percent.textContent = `${Math.round(job.progress)} %`;
    fill(this.stages, job.stages.map((s) => h("li", { class: s.status },
      s.name.replaceAll("_", " "),
      s.status === "running" ? ` ${Math.round(s.progress)} %` : s.status === "succeeded" ? " ✓" : "")));
    this.message.textContent = FINAL.has(job.status) ? "" : (job.message || "");
    fill(this.warnings, (job.warnings || []).map((w) => h("li", {}, `⚠ ${w.message}`)));
    const waiting = [];
    if (job.queue_position !== null && job.queue_position !== undefined && job.status === "queued") {
      waiting.push(`#${job.queue_position} in the queue`);  // 1-based: #1 is next
    }
    if (job.eta_seconds !== null && job.eta_seconds !== undefined && !FINAL.has(job.status)) {
      waiting.push(`about ${seconds(job.eta_seconds)} left`);
    }
    this.queue.textContent = waiting.join(" · ");
    showError(this.error, job.error ? { message: job.error.message, code: job.error.code } : null);
    this.cancel.hidden = FINAL.has(job.status);
    if (job.status === "succeeded") {
      previewUrl(job).then((url) => url && fill(this.thumb, h("img", { src: url, alt: `preview of ${jobTitle(job)}` })));
    }
  }

  async cancelJob() {
    this.cancel.disabled = true;
    try {
      this.update(await api(`/jobs/${this.job.job_id}/cancel`, { method: "POST" }));
    } catch (error) {
      showError(this.error, error);
    } finally {
      this.cancel.disabled = false;
    }
  }
}

/** The owner's jobs, newest first, with a status filter and paging; running ones kept up to date. */
export class JobList {
  constructor() {
    this.cards = new Map();
    this.filter = h("select", { id: "status-filter", onchange: () => this.reload() },
      h("option", { value: "" }, "all"),
      ["queued", "running", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s }, s)));
    this.list = h("div", { class: "cards", "aria-live": "polite" });
    this.more = h("button", { type: "button", class: "button secondary", hidden: true, onclick: () => this.load() }, "More");
    this.error = h("div", { class: "slot-error" });
    this.empty = h("p", { class: "muted", hidden: true }, "No jobs yet: create one.");
    this.element = h("section", { class: "panel jobs", "aria-labelledby": "jobs-heading" },
      h("header", { class: "panel-head" }, h("h2", { id: "jobs-heading" }, "Jobs"),
        h("label", { for: "status-filter", class: "inline" }, "Show ", this.filter)),
      this.error, this.empty, this.list, this.more);
    this.controller = new AbortController();
    this.followed = new Set();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  async reload() {
    this.cursor = null;
    this.cards.clear();
    fill(this.list);
    await this.load();
  }

  async load() {
    const query = new URLSearchParams({ limit: "12" });
    if (this.filter.value) query.set("status", this.filter.value);
    if (this.cursor) query.set("cursor", this.cursor);
    try {
      const page = await api(`/jobs?${query}`);
      showError(this.error, null);
      for (const job of page.jobs) this.place(job, false);
      this.cursor = page.next_cursor;
      this.list.dataset.loaded = "true";
      this.more.hidden = !page.next_cursor;
      this.empty.hidden = this.cards.size > 0;
    } catch (error) {
      showError(this.error, error);
    }
  }

  /** A job just submitted: on top, followed at once. */
  async add(jobId) {
    const job = await api(`/jobs/${jobId}`);
    this.place(job, true);
    this.empty.hidden = true;
  }

  place(job, first) {
    let card = this.cards.get(job.job_id);
    if (card) { card.update(job); return; }
    card = new JobCard(job);
    this.cards.set(job.job_id, card);
    if (first) this.list.prepend(card.element); else this.list.append(card.element);
    this.watch(card);
  }

  watch(card) {
    if (this.controller.signal.aborted) return;  // the list is gone: its streams were closed, open no more
    if (FINAL.has(card.job.status) || this.followed.has(card.job.job_id)) return;
    if (this.followed.size >= FOLLOWED_AT_ONCE) return;  // polled instead
    this.followed.add(card.job.job_id);
    follow(card.job.job_id, (job) => card.update(job), this.controller.signal)
      .catch((error) => showError(card.error, error))
      .finally(() => { this.followed.delete(card.job.job_id); this.watchNext(); });
  }

  watchNext() {
    for (const card of this.cards.values()) this.watch(card);
  }

  /** Jobs that run but are not followed get fetched now and then. */
  async poll() {
    if (this.controller.signal.aborted || document.hidden) return;
    for (const card of this.cards.values()) {
      if (FINAL.has(card.job.status) || this.followed.has(card.job.job_id)) continue;
      try { card.update(await api(`/jobs/${card.job.job_id}`)); } catch { /* shown on the next try */ }
    }
    this.watchNext();
  }

  dispose() {
    this.controller.abort();
    clearInterval(this.timer);
  }
}

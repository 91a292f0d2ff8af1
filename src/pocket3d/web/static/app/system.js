// The system page: devices with their memory against the scheduler's budget, resident models, the queue, and the
// models with why each unavailable one is.

import { api } from "./api.js";
import { FEATURE_NAMES, fill, h, showError } from "./ui.js";

const REFRESH_MS = 4000;

function meter(used, budget, total) {
  const bar = h("meter", { min: 0, max: total || 1, high: budget || total, value: used,
    "aria-label": `${used} of ${total} MB` });
  return h("div", { class: "meter" }, bar, h("span", { class: "muted" },
    `${used.toLocaleString("en")} MB in use · budget ${budget.toLocaleString("en")} of ${total.toLocaleString("en")} MB`));
}

export class SystemPage {
  constructor() {
    this.devices = h("div", { class: "devices" });
    this.queue = h("div");
    this.models = h("div");
    this.error = h("div", { class: "slot-error" });
    this.element = h("section", { class: "panel system", "aria-labelledby": "system-heading" },
      h("h2", { id: "system-heading" }, "System"), this.error,
      h("h3", {}, "Devices"), this.devices, h("h3", {}, "Queue"), this.queue, h("h3", {}, "Models"), this.models);
    this.refresh();
    this.timer = setInterval(() => !document.hidden && this.refresh(), REFRESH_MS);
  }

  async refresh() {
    try {
      const [devices, running, queued, models] = await Promise.all([
        api("/system/devices"), api("/jobs?status=running&limit=50"), api("/jobs?status=queued&limit=50"),
        api("/system/models")]);
      showError(this.error, null);
      fill(this.devices, devices.map((d) => h("article", { class: "device" },
        h("header", {}, h("strong", {}, d.id), ` ${d.name}${d.virtual ? " (virtual)" : ""}`),
        meter(d.scheduled_mb, d.budget_mb, d.memory_total_mb),
        h("div", { class: "muted" }, `${d.memory_used_mb.toLocaleString("en")} MB used on the device by every process`
          + (d.utilization !== null && d.utilization !== undefined ? ` · ${Math.round(d.utilization * 100)} % busy` : "")),
        h("div", {}, "Resident: ", d.resident_models.length ? d.resident_models.map((m) =>
          h("span", { class: "tag" }, m + (d.loading_models.includes(m) ? " (loading)" : ""))) : h("span", { class: "muted" }, "none")))));
      const jobs = [...running.jobs, ...queued.jobs];
      fill(this.queue, jobs.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Job", "Feature", "Model", "Status", "Progress"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, jobs.map((j) => h("tr", {},
            h("td", {}, h("a", { href: `#/jobs/${j.job_id}` }, j.job_id)), h("td", {}, FEATURE_NAMES[j.feature]),
            h("td", {}, j.model), h("td", {}, j.status + (j.queue_position !== null ? ` #${j.queue_position}` : "")),
            h("td", {}, `${Math.round(j.progress)} %`)))))
        : h("p", { class: "muted" }, "Nothing waiting or running."));
      const listed = [...models.models].sort((a, b) => Number(b.available) - Number(a.available));
      fill(this.models, h("ul", { class: "models" }, listed.map((m) => h("li", { class: m.available ? "on" : "off" },
        h("strong", {}, m.id), ` ${FEATURE_NAMES[m.feature] || m.feature.replaceAll("_", " ")}`,
        m.loaded ? h("span", { class: "tag" }, "loaded") : null,
        m.available ? null : h("div", { class: "muted" }, m.unavailable_reasons.join("; "))))));
    } catch (error) {
      showError(this.error, error);
    }
  }

  dispose() { clearInterval(this.timer); }
}

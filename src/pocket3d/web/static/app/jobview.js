// One job: its card while it runs, then the result in the 3D viewer with the inputs beside it, the downloads,
// convert, and chaining (rig this, segment this, texture this) in one click.

import { FINAL, api, fetchBlob, follow } from "./api.js";
import { JobCard, jobTitle } from "./jobs.js";
import { bytes, fill, h, showError } from "./ui.js";
import { Viewer } from "./viewer.js";

const CONVERTIBLE = {
  mesh_generation: ["glb", "obj", "ply", "stl", "fbx", "usdz"],
  texture_generation: ["glb", "obj", "ply", "stl", "fbx", "usdz"],
  segmentation: ["glb", "obj", "fbx", "usdz"],
  auto_rigging: ["glb", "fbx"],
};
const CHAINS = [
  { label: "Rig this", route: "/rig", features: ["mesh_generation", "texture_generation"] },
  { label: "Segment this", route: "/segment", features: ["mesh_generation", "texture_generation"] },
  { label: "Texture this", tab: "texture", features: ["mesh_generation", "segmentation"] },
];

export class JobPage {
  constructor(jobId, { onChained }) {
    this.jobId = jobId;
    this.onChained = onChained;
    this.controller = new AbortController();
    this.viewers = [];
    this.card = null;
    this.head = h("header", { class: "job-head" }, h("a", { href: "#/", class: "back" }, "← Jobs"),
      h("h2", { id: "job-heading" }, jobId));
    this.cardSlot = h("div");
    this.stage = h("div", { class: "stage" });
    this.side = h("aside", { class: "side" });
    this.error = h("div", { class: "slot-error" });
    this.element = h("section", { class: "panel job-page", "aria-labelledby": "job-heading" },
      this.head, this.error, this.cardSlot, h("div", { class: "result" }, this.stage, this.side));
    this.start();
  }

  async start() {
    try {
      let job = await api(`/jobs/${this.jobId}`, { signal: this.controller.signal });
      this.card = new JobCard(job, { onPage: true });
      this.cardSlot.append(this.card.element);
      this.head.querySelector("h2").textContent = jobTitle(job);
      this.showInputs(job);
      if (!FINAL.has(job.status)) {
        job = await follow(this.jobId, (j) => this.card.update(j), this.controller.signal) || job;
      }
      if (this.controller.signal.aborted) return;
      if (job.status === "succeeded") await this.showResult(job);
    } catch (error) {
      if (!this.controller.signal.aborted) showError(this.error, error);
    }
  }

  /** The images or mesh the job was given, where the server still has them. */
  async showInputs(job) {
    const input = job.input || {};
    const refs = [
      ...(input.images || []).map((r) => ({ ref: r, kind: "image" })),
      ...Object.entries(input.views || {}).map(([view, r]) => ({ ref: r, kind: "image", label: view })),
      ...(input.mesh ? [{ ref: input.mesh, kind: "mesh" }] : []),
    ];
    const cutout = job.outputs.find((o) => o.name === "remove_background.png");
    if (!refs.length && !cutout) return;
    const box = h("div", { class: "inputs" });
    this.side.prepend(h("section", { "aria-labelledby": "inputs-heading" }, h("h3", { id: "inputs-heading" }, "Input"), box));
    for (const { ref, kind, label } of refs) {
      const slot = h("figure", { class: "input" }, h("figcaption", {}, label || ref));
      box.append(slot);
      try {
        if (ref.startsWith("data:")) continue;
        let url, format;
        if (ref.startsWith("file_")) {
          const info = await api(`/files/${ref}`);
          [url, format] = [`/api/v1/files/${ref}/content`, info.format];
          slot.querySelector("figcaption").textContent = [label, info.filename || ref].filter(Boolean).join(": ");
        } else {
          [url, format] = [`/api/v1/jobs/${ref.split("/")[0]}/outputs/${ref.split("/")[1]}`, ref.split(".").pop()];
          fill(slot.querySelector("figcaption"), label ? `${label}: ` : "",
            h("a", { href: `#/jobs/${ref.split("/")[0]}` }, ref));
        }
        const blob = await fetchBlob(url, { signal: this.controller.signal });
        if (kind === "image") {
          slot.prepend(h("img", { src: URL.createObjectURL(blob), alt: `input ${label || ref}` }));
        } else if (["glb", "gltf", "obj", "ply", "stl"].includes(format)) {
          const canvas = h("canvas", { class: "viewer-canvas small", tabindex: 0, "aria-label": "the input mesh in 3D" });
          slot.prepend(h("div", { class: "viewer small" }, canvas));
          const viewer = new Viewer(canvas);
          this.viewers.push(viewer);
          await viewer.load(blob, format);
          const turned = job.orientation?.applied_rotation;
          if (turned) {  // shown upright, as the model saw it
            viewer.turn(turned.matrix);
            slot.querySelector("figcaption").append(` (turned ${turned.degrees}° about ${turned.axis.toUpperCase()} to stand Y-up)`);
          }
        }
      } catch (error) {
        slot.append(h("div", { class: "muted" }, error.status === 410 || error.status === 404
          ? "no longer stored" : error.message));
      }
    }
    if (cutout && !refs.some((r) => r.kind === "image")) {
      const blob = await fetchBlob(cutout.url);
      box.append(h("figure", { class: "input" }, h("img", { src: URL.createObjectURL(blob), alt: "the cut-out input" }),
        h("figcaption", {}, "cut out")));
    }
  }

  async showResult(job) {
    const glb = job.outputs.find((o) => o.name === "model.glb");
    this.side.append(this.downloads(job), this.actions(job));
    if (!glb) {
      const source = job.input?.convert_of;
      this.stage.append(h("p", { class: "muted" }, source
        ? ["A conversion of ", h("a", { href: `#/jobs/${source}` }, source), ": the 3D view is on its page."]
        : "This job made no GLB to show; its downloads are beside."));
      return;
    }
    const canvas = h("canvas", { class: "viewer-canvas", tabindex: 0,
      "aria-label": "the result in 3D: drag to orbit, scroll to zoom, right-drag to pan; arrow keys orbit, + and - zoom, 0 resets" });
    const box = h("div", { class: "viewer", id: "viewer" }, canvas);
    const tools = h("div", { class: "viewer-tools" });
    this.stage.append(tools, box);
    const viewer = new Viewer(canvas);
    this.viewers.push(viewer);
    const info = await viewer.load(await fetchBlob(glb.url, { signal: this.controller.signal }), "glb");
    const wire = h("input", { type: "checkbox", id: "wireframe", onchange: () => viewer.setWireframe(wire.checked) });
    tools.append(
      h("span", { class: "check" }, wire, h("label", { for: "wireframe" }, "Wireframe")),
      h("button", { type: "button", class: "button secondary small", onclick: () => viewer.reset() }, "Reset view"),
      h("span", { class: "muted", id: "triangles" }, `${Math.round(info.triangles).toLocaleString("en")} triangles`));
    if (info.parts.length) box.after(this.legend(viewer, info.parts));
    if (info.bones.length) box.after(this.rigControls(viewer, info.bones));
    box.dataset.ready = "true";
  }

  legend(viewer, parts) {
    const buttons = new Map();
    const select = (id) => {
      const next = viewer.highlighted === id ? null : id;
      viewer.highlight(next);
      for (const [pid, b] of buttons) b.setAttribute("aria-pressed", String(pid === next));
    };
    viewer.onPick = (id) => select(id);
    const list = h("ul", { class: "legend", "aria-label": "parts" }, parts.map((p) => {
      const b = h("button", { type: "button", "aria-pressed": "false", dataset: { partId: p.id }, onclick: () => select(p.id) },
        h("span", { class: "swatch", "aria-hidden": "true" }), p.name);
      b.querySelector(".swatch").style.background = `#${p.color.getHexString()}`;
      buttons.set(p.id, b);
      return h("li", {}, b);
    }));
    return h("section", { class: "parts", "aria-labelledby": "parts-heading" },
      h("h3", { id: "parts-heading" }, `${parts.length} ${parts.length === 1 ? "part" : "parts"}`), list);
  }

  rigControls(viewer, bones) {
    const joint = h("select", { id: "joint" }, bones.map((b, i) => h("option", { value: i }, b.bone.name || `joint ${i}`)));
    const angle = h("input", { type: "range", id: "bend", min: -90, max: 90, value: 0, step: 1 });
    const out = h("output", { for: "bend" }, "0°");
    const apply = () => { viewer.bend(Number(joint.value), Number(angle.value)); out.textContent = `${angle.value}°`; };
    angle.addEventListener("input", apply);
    joint.addEventListener("change", () => { viewer.bend(Number(joint.value), 0); angle.value = 0; apply(); });
    // Start on a joint that shows the skin: an arm's, else one in the middle of the chain.
    const arm = bones.findIndex((b) => /upperarm|shoulder|arm/i.test(b.bone.name));
    joint.value = String(arm >= 0 ? arm : Math.floor(bones.length / 2));
    const skeleton = h("input", { type: "checkbox", id: "skeleton", checked: true,
      onchange: () => viewer.setSkeletonVisible(skeleton.checked) });
    return h("section", { class: "rig", "aria-labelledby": "rig-heading" },
      h("h3", { id: "rig-heading" }, `Skeleton: ${bones.length} joints`),
      h("span", { class: "check" }, skeleton, h("label", { for: "skeleton" }, "Show the skeleton")),
      h("div", { class: "grid" }, h("label", { for: "joint" }, "Joint"), joint,
        h("label", { for: "bend" }, "Bend"), h("div", { class: "range" }, angle, out)));
  }

  downloads(job) {
    const slot = h("div", { class: "slot-error" });
    return h("section", { "aria-labelledby": "downloads-heading" }, h("h3", { id: "downloads-heading" }, "Downloads"),
      h("ul", { class: "downloads" }, job.outputs.map((o) => h("li", {},
        h("button", { type: "button", class: "button secondary small", dataset: { output: o.name },
          onclick: () => this.download(o, slot) }, `${o.name}`),
        h("span", { class: "muted" }, ` ${bytes(o.size)}`)))), slot);
  }

  /** Downloads go through fetch, so the key is sent as a header and never put in a link. */
  async download(output, slot) {
    try {
      const blob = await fetchBlob(output.url);
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: `${this.jobId}-${output.name}`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      showError(slot, null);
    } catch (error) {
      showError(slot, error);
    }
  }

  actions(job) {
    const formats = CONVERTIBLE[job.feature].filter((f) => !job.outputs.some((o) => o.format === f));
    const convertTo = h("select", { id: "convert-to", "aria-label": "convert to" }, formats.map((f) => h("option", { value: f }, f.toUpperCase())));
    const slot = h("div", { class: "slot-error" });
    const run = async (route, json) => {
      try { const accepted = await api(route, { method: "POST", json }); this.onChained(accepted.job_id); }
      catch (error) { showError(slot, error); }
    };
    const ref = `${job.job_id}/model.glb`;
    const hasGlb = job.outputs.some((o) => o.name === "model.glb");
    return h("section", { "aria-labelledby": "next-heading" }, h("h3", { id: "next-heading" }, "Next"),
      formats.length ? h("div", { class: "inline-form" }, h("label", { for: "convert-to" }, "Convert to"), convertTo,
        h("button", { type: "button", class: "button secondary small",
          onclick: () => run(`/jobs/${job.job_id}/convert`, { output_formats: [convertTo.value] }) }, "Convert")) : null,
      hasGlb ? h("div", { class: "chain" }, CHAINS.filter((c) => c.features.includes(job.feature)).map((c) =>
        c.route
          ? h("button", { type: "button", class: "button secondary small", onclick: () => run(c.route, { mesh: ref }) }, c.label)
          : h("a", { class: "button secondary small", href: `#/create/${c.tab}?mesh=${encodeURIComponent(ref)}` }, c.label)))
        : null,
      slot);
  }

  dispose() {
    this.controller.abort();
    for (const v of this.viewers) v.dispose();
  }
}

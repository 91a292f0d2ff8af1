// The create forms: one per feature. Inputs are dropped, pasted or picked (images show a thumbnail), checked
// against the server's limits before they are sent, uploaded with progress, then the job is submitted.

import { api, upload } from "./api.js";
import { bytes, fill, h, showError } from "./ui.js";

// What each request's output formats may be (the API's MeshFormat, SegmentationFormat, RiggingFormat).
const FORMATS = {
  mesh_generation: ["glb", "obj", "ply", "stl", "fbx", "usdz"],
  texture_generation: ["glb", "obj", "ply", "stl", "fbx", "usdz"],
  segmentation: ["glb", "obj", "fbx", "usdz"],
  auto_rigging: ["glb", "fbx"],
};
const MESH_TYPES = ".glb,.gltf,.obj,.ply,.stl,.fbx,.zip";
const IMAGE_TYPES = "image/png,image/jpeg,image/webp";
const VIEWS = ["front", "left", "back", "right"];

export const TABS = [
  { id: "image", label: "Image to 3D", feature: "mesh_generation", route: "/mesh/generate", accepts: ["image", "multiview"] },
  { id: "text", label: "Text to 3D", feature: "mesh_generation", route: "/mesh/generate", accepts: ["text"] },
  { id: "texture", label: "Texture", feature: "texture_generation", route: "/texture/generate" },
  { id: "segment", label: "Segment", feature: "segmentation", route: "/segment" },
  { id: "rig", label: "Rig", feature: "auto_rigging", route: "/rig" },
];

/** An input that takes files: a drop zone, paste, and a picker; each file shown with a thumbnail or its name. */
class FilePicker {
  constructor({ label, accept, multiple, limits, name }) {
    this.files = [];
    this.multiple = multiple;
    this.limits = limits;
    this.accept = accept;
    this.ref = null;  // a job output chosen instead of a file (job_…/model.glb)
    const id = `pick-${name}`;
    this.input = h("input", { type: "file", id, accept, multiple, class: "visually-hidden",
      onchange: () => { this.add([...this.input.files]); this.input.value = ""; } });
    this.list = h("ul", { class: "thumbs" });
    this.error = h("div", { class: "slot-error", "aria-live": "polite" });
    const limit = limits ? ` · up to ${bytes(limits.max_file_size)}` : "";
    this.zone = h("div", { class: "dropzone", dataset: { field: name } },
      h("label", { for: id, class: "button secondary" }, multiple ? "Choose files" : "Choose a file"),
      h("span", { class: "muted" }, ` or drop ${multiple ? "them" : "it"} here, or paste${limit}`),
      this.input, this.list, this.error);
    this.zone.addEventListener("dragover", (e) => { e.preventDefault(); this.zone.classList.add("over"); });
    this.zone.addEventListener("dragleave", () => this.zone.classList.remove("over"));
    this.zone.addEventListener("drop", (e) => {
      e.preventDefault();
      this.zone.classList.remove("over");
      this.add([...e.dataTransfer.files]);
    });
    this.element = h("div", { class: "field" }, h("span", { class: "label" }, label), this.zone);
  }

  acceptsType(file) {
    const name = (file.name || "").toLowerCase();
    return this.accept.split(",").some((a) => a.startsWith(".") ? name.endsWith(a) : file.type === a);
  }

  add(files) {
    showError(this.error, null);
    for (const file of files) {
      if (!this.acceptsType(file)) {
        showError(this.error, { message: `${file.name || "that file"} is not one of ${this.accept.replaceAll(",", ", ")}` });
        continue;
      }
      if (this.limits && file.size > this.limits.max_file_size) {
        showError(this.error, { message: `${file.name} is ${bytes(file.size)}: this server takes files up to `
          + `${bytes(this.limits.max_file_size)}` });
        continue;
      }
      if (!this.multiple) this.clear();
      this.files.push({ file, progress: 0 });
    }
    this.ref = this.files.length ? null : this.ref;
    this.draw();
  }

  choose(ref, label) {
    this.clear();
    this.ref = ref;
    fill(this.list, h("li", { class: "thumb ref" }, h("span", { class: "name" }, label || ref)));
  }

  clear() {
    for (const f of this.files) if (f.url) URL.revokeObjectURL(f.url);
    this.files = [];
    this.ref = null;
    this.draw();
  }

  draw() {
    fill(this.list, this.files.map((f, i) => {
      if (f.file.type.startsWith("image/") && !f.url) f.url = URL.createObjectURL(f.file);
      f.bar = h("progress", { max: 1, value: f.progress, "aria-label": `upload of ${f.file.name}` });
      f.slot = h("div", { class: "slot-error" });
      return h("li", { class: "thumb" },
        f.url ? h("img", { src: f.url, alt: f.file.name }) : h("span", { class: "mesh-icon", "aria-hidden": "true" }, "▲"),
        h("span", { class: "name" }, f.file.name || "pasted image"),
        h("span", { class: "muted" }, bytes(f.file.size)), f.bar, f.slot,
        h("button", { type: "button", class: "icon", "aria-label": `remove ${f.file.name}`,
          onclick: () => { this.files.splice(i, 1); this.draw(); } }, "×"));
    }));
  }

  get empty() { return !this.files.length && !this.ref; }

  /** Upload what was chosen; answers the refs for the request (file ids, or the chosen job output). */
  async upload() {
    if (this.ref) return [this.ref];
    const ids = [];
    for (const f of this.files) {
      if (f.fileId) { ids.push(f.fileId); continue; }
      try {
        const info = await upload(f.file, (p) => { f.progress = p; f.bar.value = p; });
        f.fileId = info.file_id;
        f.bar.value = 1;
        ids.push(info.file_id);
      } catch (error) {
        showError(f.slot, error);
        throw Object.assign(error, { shown: true });
      }
    }
    return ids;
  }
}

/** The request field an API error is about: details.field (inputs), else the first place its validation errors
 * name (["body", "seed"] → seed; a model's own parameters are checked apart, their places under parameters.). */
function errorField(error) {
  const details = error.details || {};
  if (details.field) return details.field;
  const loc = details.errors?.[0]?.loc;
  if (!Array.isArray(loc)) return "";
  const path = loc[0] === "body" ? loc.slice(1) : loc;
  const name = path.map((p, i) => typeof p === "number" ? `[${p}]` : (i ? `.${p}` : p)).join("");
  return error.code === "INVALID_PARAMETERS" ? `parameters.${name}` : name;
}

/** The form of one tab. `onSubmitted(jobId)` is called with each job it makes. */
export class CreateForm {
  constructor(tab, { models, caller, onSubmitted }) {
    this.tab = tab;
    this.onSubmitted = onSubmitted;
    const limits = caller.limits;
    this.models = models.models.filter((m) => m.feature === tab.feature
      && (!tab.accepts || tab.accepts.some((a) => m.supported_inputs.includes(a))));
    this.unavailableFormats = models.unavailable_formats || {};
    this.fields = {};
    this.submitError = h("div", { class: "slot-error", "aria-live": "polite" });
    const parts = [];
    if (tab.id === "image") {
      this.images = new FilePicker({ label: "Image(s) of one object", accept: IMAGE_TYPES, multiple: true, limits, name: "images" });
      this.views = Object.fromEntries(VIEWS.map((v) => [v, new FilePicker({
        label: v, accept: IMAGE_TYPES, multiple: false, limits, name: `views.${v}` })]));
      this.named = h("input", { type: "checkbox", id: "named-views", onchange: () => this.toggleViews() });
      this.viewGrid = h("div", { class: "views", hidden: true }, VIEWS.map((v) => this.views[v].element));
      parts.push(this.images.element,
        h("div", { class: "check" }, this.named, h("label", { for: "named-views" }, "Named views (front, left, back, right)")),
        this.viewGrid);
    }
    if (tab.id === "text" || tab.id === "texture") {
      const id = `prompt-${tab.id}`;
      this.prompt = h("textarea", { id, rows: 3, maxlength: 4000, dataset: { field: "text_prompt" },
        placeholder: tab.id === "text" ? "a red wooden chair" : "weathered bronze, green patina" });
      parts.push(h("div", { class: "field" },
        h("label", { for: id, class: "label" }, tab.id === "text" ? "Describe the object" : "Describe the texture (or give an image)"),
        this.prompt, h("div", { class: "slot-error" })));
    }
    if (["texture", "segment", "rig"].includes(tab.id)) {
      this.mesh = new FilePicker({ label: "Mesh (GLB, glTF, OBJ, PLY, STL, FBX, or a zip of one)", accept: MESH_TYPES,
        multiple: false, limits, name: "mesh" });
      parts.unshift(this.mesh.element);
    }
    if (tab.id === "texture") {
      this.images = new FilePicker({ label: "Reference image(s)", accept: IMAGE_TYPES, multiple: true, limits, name: "images" });
      parts.push(this.images.element);
    }
    this.options = this.optionsSection();
    this.button = h("button", { type: "submit", class: "button primary" }, "Create");
    this.form = h("form", { class: "create-form", id: `form-${tab.id}`, onsubmit: (e) => { e.preventDefault(); this.submit(); } },
      parts, this.options, h("div", { class: "actions" }, this.button), this.submitError);
    this.form.addEventListener("paste", (e) => this.paste(e));
  }

  toggleViews() {
    const on = this.named.checked;
    this.viewGrid.hidden = !on;
    this.images.element.hidden = on;
    this.drawModelList();
  }

  /** Why a model that is available cannot take this form's input as it stands now ("" when it can): on the
   * image tab, named views want a multi-view model, one image an image model. */
  misfit(model) {
    if (this.tab.id !== "image") return "";
    if (this.named.checked) return model.supported_inputs.includes("multiview") ? "" : "takes one image, not named views";
    return model.supported_inputs.includes("image") ? "" : "takes named views only";
  }

  paste(e) {
    const files = [...(e.clipboardData?.files || [])];
    if (!files.length) return;
    e.preventDefault();
    const images = files.filter((f) => f.type.startsWith("image/"));
    if (images.length && this.named?.checked) {
      // Into the view slot that has the focus, else the first empty one.
      const slots = VIEWS.map((v) => this.views[v]);
      const slot = slots.find((p) => p.element.contains(document.activeElement)) || slots.find((p) => p.empty) || slots[0];
      slot.add(images.slice(0, 1));
    } else if (images.length && this.images) this.images.add(images);
    else if (this.mesh) this.mesh.add(files.slice(0, 1));
  }

  /** A job output (job_…/model.glb) as the mesh: what "Rig this" and friends hand over. */
  useMesh(ref, label) { this.mesh?.choose(ref, label); }

  optionsSection() {
    const id = (n) => `${this.tab.id}-${n}`;
    this.model = h("select", { id: id("model"), dataset: { field: "model_preference" }, onchange: () => this.drawModelOptions() },
      h("option", { value: "" }, "Automatic (the first available)"),
      this.models.map((m) => h("option", { value: m.id })));
    this.quality = h("select", { id: id("quality"), dataset: { field: "quality" } },
      ["low", "medium", "high"].map((q) => h("option", { value: q, selected: q === "medium" }, q)));
    this.seed = h("input", { id: id("seed"), type: "number", min: 0, max: 4294967295, step: 1, placeholder: "random",
      dataset: { field: "seed" } });
    this.formats = h("fieldset", { class: "formats", dataset: { field: "output_formats" } },
      h("legend", {}, "Formats"),
      FORMATS[this.tab.feature].map((f) => {
        const why = this.unavailableFormats[f];
        return h("label", { class: why ? "disabled" : "", title: why || "" },
          h("input", { type: "checkbox", name: "format", value: f, checked: f === "glb", disabled: !!why }),
          ` ${f.toUpperCase()}`);
      }));
    this.params = h("div", { class: "params" });
    this.unavailable = h("ul", { class: "unavailable" },
      this.models.filter((m) => !m.available).map((m) =>
        h("li", {}, h("strong", {}, m.id), `: ${m.unavailable_reasons.join("; ")}`)));
    const section = h("details", { class: "options" },
      h("summary", {}, "Options: model, quality, formats, seed"),
      h("div", { class: "grid" },
        h("label", { for: id("model") }, "Model"), this.model,
        h("label", { for: id("quality") }, "Quality"), this.quality,
        h("label", { for: id("seed") }, "Seed"), this.seed),
      this.formats, this.params,
      this.unavailable.children.length ? h("details", { class: "why" }, h("summary", {}, "Unavailable models"), this.unavailable) : null,
      h("div", { class: "slot-error" }));
    this.drawModelList();
    return section;
  }

  /** The model list: the ones that cannot run greyed out, each with its reason. */
  drawModelList() {
    for (const option of this.model.options) {
      const m = this.models.find((x) => x.id === option.value);
      if (!m) continue;
      const why = m.available ? this.misfit(m) : `unavailable: ${m.unavailable_reasons.join("; ")}`;
      option.disabled = !!why;
      option.textContent = why ? `${m.id} — ${why}` : m.id;
    }
    if (this.model.selectedOptions[0]?.disabled) this.model.value = "";
    this.drawModelOptions();
  }

  /** The chosen model's parameters (or those of the one "Automatic" picks), from its JSON schema. */
  drawModelOptions() {
    const model = this.models.find((m) => m.id === this.model.value)
      || this.models.find((m) => m.available && !this.misfit(m));
    const schema = model?.parameters_schema;
    this.paramInputs = {};
    if (!schema || !schema.properties) { fill(this.params); return; }
    const rows = Object.entries(schema.properties).map(([name, prop]) => {
      const spec = prop.anyOf ? { ...prop, ...prop.anyOf.find((p) => p.type !== "null") } : prop;
      const id = `${this.tab.id}-param-${name}`;
      let input;
      if (spec.enum) {
        input = h("select", { id }, h("option", { value: "" }, "default"),
          spec.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
      } else if (spec.type === "boolean") {
        input = h("select", { id }, h("option", { value: "" }, `default (${spec.default ?? "off"})`),
          h("option", { value: "true" }, "yes"), h("option", { value: "false" }, "no"));
      } else if (spec.type === "integer" || spec.type === "number") {
        input = h("input", { id, type: "number", step: spec.type === "integer" ? 1 : "any",
          min: spec.minimum ?? spec.exclusiveMinimum, max: spec.maximum ?? spec.exclusiveMaximum,
          placeholder: spec.default !== undefined && spec.default !== null ? String(spec.default) : "" });
      } else if (spec.type === "string") {
        input = h("input", { id, type: "text", placeholder: spec.default ?? "" });
      } else {
        return null;  // arrays and objects: by the API only
      }
      this.paramInputs[name] = { input, spec };
      input.dataset.field = `parameters.${name}`;
      return [h("label", { for: id, title: spec.description || "" }, spec.title || name), input];
    });
    fill(this.params, h("div", { class: "label" }, `${model.id} parameters`), h("div", { class: "grid" }, rows),
      h("div", { class: "slot-error" }));
  }

  parameters() {
    const out = {};
    for (const [name, { input, spec }] of Object.entries(this.paramInputs || {})) {
      if (input.value === "") continue;
      if (input.tagName === "SELECT") out[name] = JSON.parse(input.value);
      else if (spec.type === "integer" || spec.type === "number") out[name] = Number(input.value);
      else out[name] = input.value;
    }
    return out;
  }

  /** Put an error next to what caused it: the field its details name, else the submit button. */
  place(error) {
    for (const slot of this.form.querySelectorAll(".slot-error")) showError(slot, null);
    const field = errorField(error);
    const target = field && [...this.form.querySelectorAll("[data-field]")]
      .find((el) => field === el.dataset.field || field.startsWith(el.dataset.field + "[")
        || field.startsWith(el.dataset.field + "."));
    let slot = null;
    for (let el = target; el && el !== this.form && !slot; el = el.parentElement) {
      slot = el.querySelector(":scope > .slot-error");
    }
    if (target && target.closest("details")) target.closest("details").open = true;
    if (target && target.matches("input, select, textarea")) {
      target.setAttribute("aria-invalid", "true");
      target.addEventListener("input", () => target.removeAttribute("aria-invalid"), { once: true });
    }
    showError(slot || this.submitError, error);
  }

  async submit() {
    for (const slot of this.form.querySelectorAll(".slot-error")) showError(slot, null);
    const body = {};
    const named = this.named?.checked;
    const missing = (msg) => showError(this.submitError, { message: msg });
    if (this.tab.id === "image" && !named && this.images.empty) return missing("Add an image of the object first.");
    if (this.tab.id === "image" && named && this.views.front.empty) return missing("Add at least the front view.");
    if (this.tab.id === "text" && !this.prompt.value.trim()) return missing("Describe the object first.");
    if (this.mesh && this.mesh.empty) return missing("Add a mesh first.");
    if (this.tab.id === "texture" && !this.prompt.value.trim() && this.images.empty) {
      return missing("Describe the texture or add a reference image.");
    }
    this.button.disabled = true;
    this.button.textContent = "Sending…";
    try {
      if (this.mesh) [body.mesh] = await this.mesh.upload();
      if (named) {
        body.views = {};
        for (const v of VIEWS) if (!this.views[v].empty) [body.views[v]] = await this.views[v].upload();
      } else if (this.images && !this.images.empty) {
        body.images = await this.images.upload();
      }
      if (this.prompt && this.prompt.value.trim()) body.text_prompt = this.prompt.value.trim();
      if (this.model.value) body.model_preference = this.model.value;
      body.quality = this.quality.value;
      if (this.seed.value !== "") body.seed = Number(this.seed.value);
      body.output_formats = [...this.formats.querySelectorAll("input:checked")].map((i) => i.value);
      if (!body.output_formats.length) body.output_formats = ["glb"];
      const parameters = this.parameters();
      if (Object.keys(parameters).length) body.parameters = parameters;
      const accepted = await api(this.tab.route, { method: "POST", json: body });
      this.reset();
      this.onSubmitted(accepted.job_id);
    } catch (error) {
      if (!error.shown) this.place(error);
    } finally {
      this.button.disabled = false;
      this.button.textContent = "Create";
    }
  }

  reset() {
    this.images?.clear();
    this.mesh?.clear();
    if (this.views) for (const v of VIEWS) this.views[v].clear();
    if (this.prompt) this.prompt.value = "";
  }
}

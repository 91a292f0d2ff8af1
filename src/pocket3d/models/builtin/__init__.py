"""pocket3d's own models: classical CPU baselines for every feature, and background removal. Each registers
through the ``pocket3d.models`` entry-point group (pyproject.toml) with its ``default_spec``, so an installed
pocket3d offers them without any models.yaml; a models.yaml entry of the same id overrides the spec."""

from __future__ import annotations

from pocket3d.formats import formats_for
from pocket3d.models.spec import Feature, ModelSpec

MESH_OUTPUTS = formats_for(Feature.MESH_GENERATION)  # every format: a textured mesh is all they make
# The order the built-ins are offered in, where two serve the same request: the fallback after the better one.
PREFERENCE = ("builtin_silhouette", "builtin_visual_hull", "builtin_procedural", "builtin_projection_paint",
              "builtin_segmentation", "builtin_rigging", "builtin_u2netp", "builtin_grabcut")


def builtin_spec(model_id: str, feature: Feature, inputs: set[str], outputs: tuple[str, ...], description: str,
                 **spec: object) -> ModelSpec:
    """A built-in's spec: on the CPU, two stages at once, no memory to speak of unless it says so."""
    fields: dict[str, object] = {"vram_requirement": 0, "max_concurrent": 2, "devices": ("cpu",), **spec}
    return ModelSpec(id=model_id, feature=feature, supported_inputs=frozenset(inputs), supported_outputs=outputs,
                     description=description, **fields)  # type: ignore[arg-type]

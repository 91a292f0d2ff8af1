"""USDZ (AR Quick Look, Reality Composer, Omniverse): one USD mesh per geometry, a UsdPreviewSurface material
with the base-colour texture or the vertex colours, packaged with the ARKit rules (usd-core's
CreateNewARKitUsdzPackage). Y up, metres."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import trimesh

from pocket3d.geometry.meshes import world_meshes


def unavailable_reason() -> str | None:
    # find_spec, not import: asking must not load the USD libraries into the API process
    return None if importlib.util.find_spec("pxr") else "USDZ export needs the usd-core package"


def export(scene: trimesh.Scene, dest: Path) -> None:
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt

    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        work = Path(tmp)
        stage_path = work / "model.usdc"
        stage = Usd.Stage.CreateNew(str(stage_path))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, "/model")
        stage.SetDefaultPrim(root.GetPrim())
        UsdGeom.Scope.Define(stage, "/model/materials")
        for i, mesh in enumerate(world_meshes(scene)):  # world coordinates, one mesh per instance
            prim = UsdGeom.Mesh.Define(stage, f"/model/mesh_{i}")
            prim.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(mesh.vertices.astype(np.float32)))
            prim.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, dtype=np.int32)))
            prim.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(mesh.faces.astype(np.int32).ravel()))
            prim.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(mesh.vertex_normals.astype(np.float32)))
            prim.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
            prim.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
            lo, hi = mesh.bounds
            prim.CreateExtentAttr([Gf.Vec3f(*map(float, lo)), Gf.Vec3f(*map(float, hi))])
            material = UsdShade.Material.Define(stage, f"/model/materials/material_{i}")
            shader = UsdShade.Shader.Define(stage, f"/model/materials/material_{i}/surface")
            shader.CreateIdAttr("UsdPreviewSurface")
            shader.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.9)
            shader.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
            material.CreateSurfaceOutput().ConnectToSource(shader.ConnectableAPI(), "surface")
            visual = mesh.visual
            primvars = UsdGeom.PrimvarsAPI(prim)
            image = None
            if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
                image = getattr(visual.material, "baseColorTexture", None) or getattr(visual.material, "image", None)
            if image is not None:
                st = primvars.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
                st.Set(Vt.Vec2fArray.FromNumpy(np.asarray(visual.uv, dtype=np.float32)))
                texture_name = f"textures/base_color_{i}.png"
                (work / "textures").mkdir(exist_ok=True)
                image.convert("RGBA").save(work / texture_name)
                reader = UsdShade.Shader.Define(stage, f"/model/materials/material_{i}/st_reader")
                reader.CreateIdAttr("UsdPrimvarReader_float2")
                reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
                tex = UsdShade.Shader.Define(stage, f"/model/materials/material_{i}/base_color")
                tex.CreateIdAttr("UsdUVTexture")
                tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(texture_name)
                tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
                tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
                shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(
                    tex.ConnectableAPI(), "rgb")
            elif visual.kind == "vertex":
                colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
                display = primvars.CreatePrimvar("displayColor", Sdf.ValueTypeNames.Color3fArray,
                                                 UsdGeom.Tokens.vertex)
                display.Set(Vt.Vec3fArray.FromNumpy(colors))
                reader = UsdShade.Shader.Define(stage, f"/model/materials/material_{i}/color_reader")
                reader.CreateIdAttr("UsdPrimvarReader_float3")
                reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("displayColor")
                reader.CreateOutput("result", Sdf.ValueTypeNames.Float3)
                shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(
                    reader.ConnectableAPI(), "result")
            else:
                shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set(Gf.Vec3f(*_material_color(visual)))
            UsdShade.MaterialBindingAPI.Apply(prim.GetPrim()).Bind(material)
        stage.GetRootLayer().Save()
        if not UsdUtils.CreateNewARKitUsdzPackage(Sdf.AssetPath(str(stage_path)), str(dest)):
            raise RuntimeError("usd-core could not package the USDZ")


def _material_color(visual: trimesh.visual.base.Visuals) -> tuple[float, float, float]:
    material = getattr(visual, "material", None)
    for attr in ("baseColorFactor", "diffuse"):
        value = getattr(material, attr, None)
        if value is not None:
            rgb = np.asarray(value, dtype=float).ravel()[:3]
            return tuple(float(c) for c in (rgb / 255.0 if rgb.max() > 1 else rgb))
    return (0.7, 0.7, 0.7)

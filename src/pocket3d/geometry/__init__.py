"""Mesh I/O, validation and format export. Imports nothing from the layers above it."""

from pocket3d.geometry.exchange import FORMATS, LOADABLE, MeshError, export_scene, load_scene, unavailable_formats

__all__ = ["FORMATS", "LOADABLE", "MeshError", "export_scene", "load_scene", "unavailable_formats"]

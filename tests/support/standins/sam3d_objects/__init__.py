"""TEST STAND-IN for sam-3d-objects (github.com/facebookresearch/sam-3d-objects, package ``sam3d_objects``):
computes nothing real.

Upstream ``sam3d_objects/__init__.py`` imports ``sam3d_objects.init`` unless ``LIDRA_SKIP_INIT`` is set (the
notebook's inference.py sets it); the stand-in has nothing to initialise. Its modules mimic only what pocket3d's
adapter (pocket3d.models.adapters.sam3d) reaches: the pipeline ``Inference`` wraps and ``to_glb``.
"""

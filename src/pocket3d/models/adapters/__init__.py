"""Adapters for the real open 3D models, each an optional extra (``pip install 'pocket3d[hunyuan3d]'``, ...).

A module per library. Each imports its library lazily, so the registry lists every model, and one whose
library, weights or device is missing as unavailable with the reason. ``base`` holds what they share.
"""

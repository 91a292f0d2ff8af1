"""pocket3d: a self-hosted server for 3D generative AI."""

__version__ = "0.1.0"

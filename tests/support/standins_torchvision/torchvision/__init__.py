"""TEST STAND-IN for torchvision: only the three transforms Hunyuan3D-2's image conditioner uses (Resize,
CenterCrop, Normalize, chained by Compose), written on torch tensors.

torchvision has no CPU build on the test machine, and hy3dgen imports it at module level. The tests put this
package on the path only when the real torchvision is absent (see tests/support/standins/README.md). Being a
real package on the path gives it a module spec, which diffusers' availability check requires.
"""

__version__ = "0.0.0+pocket3d.standin"

from torchvision import io, transforms  # noqa: E402,F401

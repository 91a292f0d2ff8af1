"""TEST STAND-IN for ``torchvision_fix.py`` at the root of a Hunyuan3D-2.1 checkout; it fixes nothing.

The real ``apply_fix()`` puts a replacement for ``torchvision.transforms.functional_tensor`` (removed from newer
torchvision, still imported by basicsr/RealESRGAN) in place; the checkout's demos call it before loading the paint
pipeline, and so does pocket3d's adapter. This one only records the call (``hy3dpaint.torchvision_fix``).
"""

from standin_calls import record


def apply_fix():
    record("hy3dpaint.torchvision_fix")
    return True

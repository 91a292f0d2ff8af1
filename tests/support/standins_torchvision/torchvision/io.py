"""TEST STAND-IN: transformers imports ``torchvision.io`` at module level (video and image decoding); Hunyuan3D's
path never decodes through it."""

from enum import Enum


class ImageReadMode(Enum):
    UNCHANGED = 0
    GRAY = 1
    GRAY_ALPHA = 2
    RGB = 3
    RGB_ALPHA = 4


def decode_image(*args, **kwargs):
    raise NotImplementedError("torchvision.io.decode_image is not in pocket3d's test stand-in")

"""TEST STAND-IN: transformers imports ``torchvision.transforms.v2.functional`` at module level."""

from torchvision.transforms.v2 import functional  # noqa: F401

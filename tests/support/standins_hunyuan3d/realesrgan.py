"""TEST STAND-IN for ``realesrgan`` (Real-ESRGAN, the upscaler Hunyuan3D-2.1's paint pipeline loads in
``hy3dpaint/utils/image_super_utils.py``: ``RealESRGANer``); it computes nothing and defines nothing.

pocket3d's 2.1 paint adapter lists the model as unavailable without the package; the textureGenPipeline stand-in
never imports it (its "upscaler" is its own), so this empty module only lets that check pass.
"""

"""TEST STAND-IN for ``custom_rasterizer_kernel``, the CUDA rasteriser Hunyuan3D-2 and 2.1 compile from their
checkouts (``hy3dgen/texgen/custom_rasterizer/setup.py``, ``hy3dpaint/custom_rasterizer/setup.py``:
``CUDAExtension("custom_rasterizer_kernel", ...)``). It computes nothing and defines nothing.

pocket3d's paint adapters never call it: they check that it is installed, to list a paint model as unavailable
with the build command when it is not. The texgen and hy3dpaint stand-ins do not rasterise, so this empty
module only lets that check pass in the tests.
"""

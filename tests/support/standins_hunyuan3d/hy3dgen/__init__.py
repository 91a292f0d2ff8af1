"""TEST STAND-IN for the ``hy3dgen`` package's texture half only; it computes nothing real.

The real ``hy3dgen`` 2.0.2 is installed (its shape pipeline runs for real in the tests), but its ``texgen`` needs CUDA
extensions that cannot exist here. This package therefore joins the real one instead of hiding it:
``pkgutil.extend_path`` adds every other ``hy3dgen`` folder on ``sys.path`` (the installed one in site-packages)
to this package's ``__path__``, after this folder. ``hy3dgen.texgen`` is found here first, as the stand-in;
``hy3dgen.shapegen``, ``hy3dgen.rembg`` and the rest are found in the real package and are the real code. (The
real ``hy3dgen/__init__.py`` holds only a licence comment, so nothing is lost by not running it.)

Only the tests of the Hunyuan3D paint adapters put this folder on ``PYTHONPATH``.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

"""TEST STAND-IN for TRELLIS.2 (github.com/microsoft/TRELLIS.2, package ``trellis2``): computes nothing real.

It mimics only the entry points pocket3d's adapters (pocket3d.models.adapters.trellis2) call, with the real
signatures and return types: ``trellis2.pipelines.Trellis2ImageTo3DPipeline`` and ``Trellis2TexturingPipeline``
(``from_pretrained(path, config_file)``, ``to``, ``run``, their samplers' ``sample`` / ``sample_once``). The GLB
export of the image pipeline's result is the companion package's stand-in, ``o_voxel.postprocess.to_glb``. Every
call is noted with ``standin_calls.record``. Seed ``FAIL_SEED`` makes a run fail, as a model error would.
"""

FAIL_SEED = 4013

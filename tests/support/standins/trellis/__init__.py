"""TEST STAND-IN for TRELLIS (github.com/microsoft/TRELLIS, package ``trellis``): computes nothing real.

It mimics only the entry points pocket3d's adapter (pocket3d.models.adapters.trellis) calls, with the real
signatures and return types: ``trellis.pipelines.TrellisImageTo3DPipeline`` / ``TrellisTextTo3DPipeline``
(``from_pretrained``, ``to``, ``run``, ``run_multi_image``, their ``sparse_structure_sampler`` / ``slat_sampler``
with ``sample`` / ``sample_once``) and ``trellis.utils.postprocessing_utils.to_glb``. The "generated" object is an
icosphere coloured from the input; every call is noted with ``standin_calls.record``. Seed ``FAIL_SEED`` makes
a run fail, as a model error would.
"""

FAIL_SEED = 4013

"""TEST STAND-IN for HoloPart (VAST-AI-Research/HoloPart): computes nothing real.

Upstream ``holopart/`` is a folder of a source checkout (no packaging). This stand-in mimics only what pocket3d's
adapter (``pocket3d.models.adapters.holopart``) calls, as the demo ``scripts/inference_holopart.py`` does:
``holopart.pipelines.pipeline_holopart.HoloPartPipeline`` (``from_pretrained``, ``to``, ``vae.set_flash_decoder``,
``__call__`` with ``output_type="latent"``) and ``holopart.inference_utils.flash_extract_geometry``. A test makes
it fail by pointing ``HOLOPART_STANDIN_FAIL_FLAG`` at a file and creating that file.
"""

"""TEST STAND-IN for the ``hunyuanpaintpbr`` folder of Hunyuan3D-2.1 (``hy3dpaint/hunyuanpaintpbr``: the diffusers
custom pipeline of the PBR paint model); it computes nothing. The textureGenPipeline stand-in only checks that the
adapter pointed ``Hunyuan3DPaintConfig.custom_pipeline`` at this folder."""

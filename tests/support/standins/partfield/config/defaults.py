"""TEST STAND-IN for PartField's ``partfield/config/defaults.py`` (the yacs defaults ``_C``): computes nothing
real. Only the keys the adapter and this stand-in read, with upstream's default values."""

from __future__ import annotations

from . import CfgNode

_C = CfgNode()
_C.seed = 0
_C.result_name = "test_all"
_C.continue_ckpt = None
_C.n_point_per_face = 2000
_C.n_sample_each = 10000
_C.is_pc = False
_C.remesh_demo = False
_C.vertex_feature = False
_C.triplane_resolution = 128
_C.triplane_channels_low = 128
_C.triplane_channels_high = 512
_C.use_pvcnnonly = True
_C.use_2d_feat = False
_C.regress_2d_feat = False
_C.dataset = CfgNode(type="Demo_Dataset", data_path="objaverse_data/", val_batch_size=2, val_num_workers=32)
_C.pvcnn = CfgNode(point_encoder_type="pvcnn", z_triplane_channels=64, z_triplane_resolution=256)
_C.loss = CfgNode(triplet=0.0)

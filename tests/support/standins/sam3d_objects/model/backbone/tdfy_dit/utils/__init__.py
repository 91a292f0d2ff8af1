"""TEST STAND-IN for sam-3d-objects' ``sam3d_objects/model/backbone/tdfy_dit/utils`` package: computes nothing
real."""

"""TEST STAND-IN for sam-3d-objects' ``sam3d_objects/pipeline`` package: computes nothing real."""

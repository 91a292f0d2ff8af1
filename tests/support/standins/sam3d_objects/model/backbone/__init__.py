"""TEST STAND-IN for sam-3d-objects' ``sam3d_objects/model/backbone`` package: computes nothing real."""

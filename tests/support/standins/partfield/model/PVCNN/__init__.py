"""TEST STAND-IN for PartField's ``partfield/model/PVCNN/`` folder: computes nothing real."""

"""TEST STAND-IN for PartField's ``partfield/model/`` folder: computes nothing real."""

"""TEST STAND-IN for HoloPart's ``holopart/pipelines/`` folder: computes nothing real."""

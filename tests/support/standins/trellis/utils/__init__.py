"""TEST STAND-IN for TRELLIS's ``trellis.utils`` (upstream trellis/utils/__init__.py, empty): computes nothing
real."""

"""TEST STAND-IN for UniRig's ``src/data`` package (VAST-AI-Research/UniRig): computes nothing real."""

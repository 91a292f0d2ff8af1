"""TEST STAND-IN for UniRig's ``src/system`` package (VAST-AI-Research/UniRig): computes nothing real."""

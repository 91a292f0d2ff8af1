"""TEST STAND-IN for UniRig's ``src/model`` package (VAST-AI-Research/UniRig): computes nothing real."""

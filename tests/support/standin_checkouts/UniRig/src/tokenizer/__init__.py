"""TEST STAND-IN for UniRig's ``src/tokenizer`` package (VAST-AI-Research/UniRig): computes nothing real."""

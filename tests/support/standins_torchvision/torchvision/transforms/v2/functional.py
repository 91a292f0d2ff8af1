"""TEST STAND-IN: imported by transformers at module level, never called on Hunyuan3D's path."""

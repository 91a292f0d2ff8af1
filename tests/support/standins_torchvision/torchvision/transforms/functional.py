"""TEST STAND-IN: names transformers imports at module level when torchvision is installed. Hunyuan3D's path
never calls them; a call says so instead of computing something wrong."""


def _absent(name):
    def call(*args, **kwargs):
        raise NotImplementedError(f"torchvision.transforms.functional.{name} is not in pocket3d's test stand-in")
    call.__name__ = name
    return call


pil_to_tensor = _absent("pil_to_tensor")
to_pil_image = _absent("to_pil_image")

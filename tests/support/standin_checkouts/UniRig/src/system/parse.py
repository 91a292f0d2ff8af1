"""TEST STAND-IN for UniRig's system factory (upstream src/system/parse.py ``get_system``): computes nothing
real. ``get_system(**config)`` picks ``ARSystem`` or ``SkinSystem`` by ``__target__`` (``ar``, ``skin``) and
passes the rest, as upstream; each construction is recorded (``unirig.get_system``)."""

from __future__ import annotations

from src.system.ar import ARSystem
from src.system.skin import SkinSystem
from standin_calls import record


def get_system(**kwargs):
    classes = {"ar": ARSystem, "skin": SkinSystem}
    target = kwargs.pop("__target__")
    assert target in classes, f"expect: [{','.join(classes)}], found: {target}"
    record("unirig.get_system", target=target, generate_kwargs=dict(kwargs.get("generate_kwargs") or {}))
    return classes[target](**kwargs)

"""Run by ``uv_atlas.atlas`` in a process of its own (never imported by pocket3d): reads the mesh and the packing
options as an .npz on stdin, writes xatlas's atlas (source vertex, faces, uv) as an .npz on stdout."""

import io
import sys

import numpy as np
import xatlas


def _main() -> None:
    given = np.load(io.BytesIO(sys.stdin.buffer.read()))
    resolution, padding = (int(v) for v in given["options"])
    made = xatlas.Atlas()
    made.add_mesh(given["vertices"], given["faces"])
    packing = xatlas.PackOptions()
    packing.resolution = resolution
    packing.padding = padding
    made.generate(pack_options=packing)
    if made.atlas_count > 1:  # charts spilled onto a second page, whose UVs would overlap the first's
        packing.resolution = 0
        made.generate(pack_options=packing)
    source, new_faces, uv = made[0]
    out = io.BytesIO()
    np.savez(out, source=source, faces=new_faces, uv=uv)
    sys.stdout.buffer.write(out.getvalue())


if __name__ == "__main__":
    _main()

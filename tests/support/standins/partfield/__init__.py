"""TEST STAND-IN for PartField (nv-tlabs/PartField): computes nothing real.

Upstream ``partfield/`` is a folder of a source checkout (no packaging), put on ``sys.path`` through models.yaml's
``options.source``. This stand-in mimics only what pocket3d's adapter (``pocket3d.models.adapters.partfield``)
calls: ``partfield.config.setup``, ``partfield.model_trainer_pvcnn_only_demo.Model`` (its ``pvcnn`` and
``triplane_transformer`` modules) and ``partfield.model.PVCNN.encoder_pc.sample_triplane_feat``. Each module says
which upstream file it stands in for. A test makes it fail by pointing ``PARTFIELD_STANDIN_FAIL_FLAG`` at a file
and creating that file.
"""

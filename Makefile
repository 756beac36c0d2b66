# Quickstart: `make demo` (sets up .venv and runs the whole job on a synthetic
# cohort) and `make test`.  Every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_data
BEAM_LOCAL := --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0

.PHONY: venv oracle test test-all check-dataflow bench-memory bench-scale browser app demo bench-preprocess bench-input bench-train bench-predict bench-launch bench-lesions bench-spatial bench-cv bench-side-by-side clean

$(STAMP): requirements.txt constraints.txt setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt pytest gcp-storage-emulator import-linter
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The official BraTS 2026 package (brats-evaluation, AGPL-3.0) as a test oracle, in a venv of its own:
# its pins clash with ours and its licence keeps it out of the product (BUILD_NOTES.md, Pins).
ORACLE_VENV  := .oracle-venv
ORACLE_STAMP := $(ORACLE_VENV)/.installed-stamp

$(ORACLE_STAMP): constraints-oracle.txt
	$(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-oracle.txt brats-evaluation
	touch $(ORACLE_STAMP)

oracle: $(ORACLE_STAMP)  ## the official BraTS 2026 evaluation package in .oracle-venv (tests compare against it)

test: venv oracle  ## the fast suite (slow tests skipped)
	$(PY) -m pytest -q -m "not slow" --durations=15 tests

check-dataflow: venv  ## build and stage the Dataflow job offline (template + GCS emulator on 127.0.0.1) and inspect it
	$(PY) -m pytest -q tests/beam_pipeline/test_dataflow.py

test-all: venv oracle browser  ## everything, slow tests included
	$(PY) -m pytest -q tests

browser:  ## Debian's chromium for the browser test (root; no browser download at test time)
	@test -x /usr/bin/chromium || apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }

APP_MODEL ?= $(DEMO)/runs/tiny/model.keras

app: venv  ## the web app (http://localhost:8501) with the demo model; APP_MODEL=runs/exp1/model.keras for another
	@test -f $(APP_MODEL) || { echo "no model at $(APP_MODEL): run 'make demo' first, or make app APP_MODEL=path/to/model.keras"; exit 1; }
	$(PY) -m streamlit run app/streamlit_app.py --server.headless=true --server.maxUploadSize=500 \
	    --browser.gatherUsageStats=false -- --model=$(APP_MODEL) --models_dir=runs --max_upload_mb=500

demo: venv  ## synthetic cohort -> versioned TFRecord dataset -> a few minutes of CPU training -> evaluate -> predict
	rm -rf $(DEMO)
	$(PY) -m synthetic.generate --output_dir=$(DEMO)/cohort --num_patients=8 --shape=96,96,80
	$(PY) -m beam_pipeline.preprocess --config=configs/preprocess/synthetic_small.py \
	    --config.crop.size=64,64,64 --config.n4.shrink_factor=4 --input=$(DEMO)/cohort --output_dir=$(DEMO)/datasets $(BEAM_LOCAL)
	$(PY) -m beam_pipeline.verify --data_dir=$$(ls -d $(DEMO)/datasets/synthetic/*/)
	$(PY) -m beam_pipeline.versions --output_dir=$(DEMO)/datasets
	$(PY) -m trainer.train --config=configs/train/tiny_cpu.py --workdir=$(DEMO)/runs/tiny \
	    --data_dir=$$(ls -d $(DEMO)/datasets/synthetic/*/) --config.steps_per_epoch=100  # a seventh of the recipe's steps: 64^3 volumes, a 5-minute demo
	$(PY) -m evaluation.evaluate --model=$(DEMO)/runs/tiny/model.keras --split=val
	$(PY) -m serving.predict --model=$(DEMO)/runs/tiny/model.keras --output_dir=$(DEMO)/predictions \
	    --input=$(DEMO)/cohort/$$($(PY) -c "import json,glob; print(json.load(open(glob.glob('$(DEMO)/datasets/synthetic/*/manifest.json')[0]))['splits']['val']['patients'][0])")

bench-preprocess: venv  ## seed recipe vs this pipeline at 240x240x155 (prints JSON)
	$(PY) benchmarks/bench_preprocess.py

bench-memory: venv  ## peak resident memory per patient, one worker, isolate on/off: 240x240x155, MNI, MEN-RT 0.5 mm (prints JSON)
	nice $(PY) benchmarks/bench_memory.py

bench-scale: venv  ## serial parts vs per-patient time at 1-2 workers and 12-48 patients; 1,250-patient prediction (prints JSON)
	nice $(PY) benchmarks/bench_scale.py

bench-input: venv  ## tf.data vs the seeds' NIfTI generator (prints JSON)
	$(PY) benchmarks/bench_input.py

bench-predict: venv  ## seconds per patient to predict on CPU: preprocessing and inference, with and without TTA (prints JSON)
	$(PY) benchmarks/bench_predict.py

bench-launch: venv  ## launcher seconds to list and fingerprint 250..2,000 tiny patients, local and gs:// (emulator) (prints JSON)
	$(PY) benchmarks/bench_launch.py

bench-lesions: venv oracle  ## seconds per 240x240x155 patient for lesion-wise scores, every region of five challenges (prints JSON)
	$(PY) benchmarks/bench_lesions.py

bench-train: venv  ## step time of the seed and default U-Nets, float32 vs mixed precision (prints JSON)
	$(PY) benchmarks/bench_train.py

bench-spatial: venv  ## CPU-s per 128^3 patch of each augmentation transform (prints JSON)
	$(PY) benchmarks/bench_spatial.py

bench-cv: venv  ## five-fold table on a synthetic cohort: baseline, + regions, + full augmentation, + ensemble, + post-processing (long; prints JSON)
	$(PY) benchmarks/bench_cv.py

bench-side-by-side: venv  ## one 240x240x155 patient preprocessed alone and two at once, no Beam: wall and CPU s (prints JSON)
	$(PY) benchmarks/bench_side_by_side.py

clean:
	rm -rf $(VENV) $(ORACLE_VENV) $(DEMO) bench_data .pytest_cache test-artifacts

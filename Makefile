# ModelRollout — developer entry points. Python lives under operator/ (a source root, not a package).
PYTHON ?= python
PYTEST_ARGS ?=
LOCALENV ?= .localenv
export PYTHONPATH := $(CURDIR)/operator$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: bootstrap install test test-unit lint crds manifests demo e2e e2e-existing cluster-up cluster-down bench controlplane bench-scale bench-peer

# Everything a fresh machine needs (Debian packages, Python deps, control plane binaries); idempotent.
bootstrap:
	bash hack/bootstrap.sh

install:
	$(PYTHON) -m pip install -e '.[test]'

controlplane:
	bash hack/controlplane/build.sh
	bash hack/etcd/build.sh

# The whole suite: unit, integration (real local control plane + Prometheus) and the demo as a test, then `make
# e2e` (without Docker: the real node, real pods and requests through Traefik; with Docker: kind).
test: bootstrap
	MODELROLLOUT_REQUIRE_CLUSTER=1 $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests \
		--ignore-glob='tests/integration/test_realnode*'
	$(MAKE) e2e

test-unit:
	$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests/unit

lint:
	ruff check operator tests bench hack
	mypy
	mypy tests/unit/sim.py  # its match over the actions must stay exhaustive (assert_never)
	lint-imports

crds:
	$(PYTHON) -m modelrollout crd > crds/modelrollouts.modelrollout.io.yaml
	$(PYTHON) hack/render_chart.py --manifests

# The chart's CRD copy and manifests/ (kustomize base + install.yaml) regenerated from the chart defaults.
manifests:
	$(PYTHON) hack/render_chart.py --manifests

# A complete demo rollout on a self-contained local environment (no cluster, no Docker).
# The model server standing in for the pods: mlserver (a real MLServer serving scikit-learn iris revisions,
# installed by bootstrap) or refserver (this project's reference server: make demo MODEL=refserver).
MODEL ?= mlserver
demo: bootstrap
	$(PYTHON) -m devenv.demo --model $(MODEL)

# e2e: `make e2e` creates a kind cluster where Docker runs and runs tests/e2e on it; without Docker it runs the
# real-request scenarios on a real local node with Traefik (tests/integration/test_realnode*.py). It says which.
# `make e2e-existing` runs tests/e2e on KUBECONFIG's cluster (without a reachable one they skip and say why).
e2e:
	PYTHON=$(PYTHON) bash tests/e2e/kind.sh

e2e-existing:
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

cluster-up:
	$(PYTHON) -m devenv.localenv.controlplane up --dir $(LOCALENV) --detach
	@echo "export KUBECONFIG=$(CURDIR)/$(LOCALENV)/kubeconfig"

cluster-down:
	$(PYTHON) -m devenv.localenv.controlplane down --dir $(LOCALENV)

bench:
	$(PYTHON) -m bench.run

# N = 100, 500, 1000 rollouts at once on one operator; rewrites its section of docs/benchmarks.md.
bench-scale:
	$(PYTHON) -m bench.scale --n 100 500 1000 --update-docs

# This operator and Argo Rollouts v1.10.2 side by side on one control plane (N = 100, 300, 1000; breach → stable;
# about 25 min); builds Argo's controller on demand (hack/argo/build.sh, cached outside the clone); rewrites its
# section of docs/benchmarks.md.
bench-peer:
	bash hack/argo/build.sh >/dev/null
	$(PYTHON) -m bench.peer --n 100 300 1000 --update-docs

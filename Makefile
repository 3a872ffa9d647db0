# One entry point for developers and CI. `make test` is exactly what .ci/run calls.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: run run-node test test-future-clock lint unit cluster controlplane node node-test image test-image generate crd deploy bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Builds kube-apiserver, kube-controller-manager, kubectl, etcd and helm once; cached under ~/.cache/access-hygiene.
controlplane:
	bash controlplane/build.sh >/dev/null

# A node for the local control plane (kubelet, containerd, kube-proxy, kube-scheduler, CNI plugins, CoreDNS,
# kube-network-policies, agnhost, pause); cached under ~/.cache/access-hygiene like the control plane.
node:
	bash controlplane/node/build.sh >/dev/null

# The main job on a local default: a real control plane on loopback, the CRD, the examples, the operator.
run: $(VENV)/.installed controlplane
	$(BIN)/access-hygiene local --examples examples --examples examples/findings

# The same on the in-cluster path: the control plane with a real node, the operator image built from the Dockerfile
# and imported into the node, the chart installed with helm, the operator in its Pod (docs/node.md). Needs root.
run-node: $(VENV)/.installed controlplane node
	$(BIN)/access-hygiene local --node --examples examples --examples examples/findings

# The operator image from the Dockerfile on a local Debian base (mmdebstrap), no registry: podman + runc + mmdebstrap
# (Debian packages). Cached under ~/.cache/access-hygiene/image, keyed by a hash of the build inputs.
image: $(VENV)/.installed
	$(BIN)/python -m access_hygiene.localcluster.image

# That image run as the chart runs it (its ServiceAccount token, security context, probes) against a real control
# plane: the `image` tier of the cluster tests (tests/cluster/test_image.py).
test-image: $(VENV)/.installed controlplane
	$(PY) -m pytest -m image

lint: $(VENV)/.installed
	$(BIN)/ruff check operator tests benchmarks monitoring scripts
	$(BIN)/ruff format --check operator tests benchmarks monitoring scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(VENV)/.installed
	$(PY) -m pytest -m "unit or contract"

cluster: $(VENV)/.installed controlplane
	$(PY) -m pytest -m cluster

# Every tier: lint, unit, contract, cluster, image and node (root, runc and iptables; `.ci/run` installs them).
test: $(VENV)/.installed controlplane node lint
	$(PY) -m pytest

# The node tier: one node for the session (localcluster/node.py), tokens inside containers, DNS, NetworkPolicies
# on packets. Needs root, runc and iptables.
node-test: $(VENV)/.installed controlplane node
	$(PY) -m pytest -m node tests/node

# The unit and contract tiers again with the system clock three years ahead (libfaketime, preloaded from the
# `libfaketime` dev package): a test that reads today's date instead of a pinned clock fails here. Monotonic clocks
# stay real (timeouts and sleeps keep working). The cluster tier stays on the real clock: its Go binaries are
# static, libfaketime cannot move their clock, and a split clock would test nothing real.
FAKETIME_ENV = LD_PRELOAD="$$($(PY) -c 'import libfaketime; print(libfaketime._get_shared_lib("libfaketime.so.1"))')" \
	FAKETIME=+3y FAKETIME_DONT_FAKE_MONOTONIC=1
test-future-clock: $(VENV)/.installed controlplane
	$(FAKETIME_ENV) $(PY) -c 'import time, sys; sys.exit(0 if time.time() > $(shell date +%s) + 2 * 365 * 86400 else "libfaketime did not move the clock")'
	$(FAKETIME_ENV) $(PY) -m pytest -m "(unit or contract) and not cluster"

# Regenerate every generated artefact: CRD, bootstrap ClusterRoles (from a real kube-apiserver), RBAC rule
# reference, dashboard/alerts, OpenReports CRDs, then chart schema, chart CRDs, deploy/.
generate: $(VENV)/.installed controlplane
	$(BIN)/access-hygiene crd --out-dir crds
	$(PY) scripts/generate_bootstrap_roles.py
	$(BIN)/access-hygiene rules --prefix AH-RBAC -o markdown > docs/rbac-rules.md
	$(PY) -m monitoring
	$(PY) scripts/openreports_crds.py
	$(PY) scripts/render_chart.py

crd: generate
deploy: generate

# In-process audit (50,000 objects), then the real CLI as a subprocess at 5,000 / 20,000 / 50,001 objects.
bench: $(VENV)/.installed
	$(PY) benchmarks/scan_benchmark.py
	$(PY) benchmarks/cli_benchmark.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .local-cluster

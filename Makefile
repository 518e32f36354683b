# The two set-up commands the README promises; each installs what it needs.
.PHONY: demo test lint lint-only testbed-binaries generate

demo:
	@bash hack/setup.sh
	.venv/bin/swarmops demo

# Static checks first (seconds), then every test, end-to-end ones included.
test:
	@bash hack/setup.sh
	@$(MAKE) --no-print-directory lint-only
	.venv/bin/python -m pytest

lint:
	@bash hack/setup.sh
	@$(MAKE) --no-print-directory lint-only

lint-only:
	.venv/bin/ruff check operator tests bench
	.venv/bin/ruff format --check operator tests bench
	.venv/bin/mypy

# Rebuild the test bed's binaries from the pinned Go modules under hack/tools.
testbed-binaries:
	FORCE=1 bash hack/build-testbed.sh

# Regenerate what is derived: the CRDs (from the models) and manifests/install.yaml
# (from the chart); tests fail when either is stale.
generate:
	@bash hack/setup.sh
	.venv/bin/swarmops crds
	bash hack/render-install.sh

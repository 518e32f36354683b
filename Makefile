# The two set-up commands the README promises; each installs what it needs.
.PHONY: demo test lint testbed-binaries crds

demo:
	@bash hack/setup.sh
	.venv/bin/swarmops demo

test:
	@bash hack/setup.sh
	.venv/bin/python -m pytest

lint:
	@bash hack/setup.sh
	.venv/bin/ruff check operator tests bench
	.venv/bin/ruff format --check operator tests bench
	.venv/bin/mypy

# Rebuild the test bed's binaries from the pinned Go modules under hack/tools.
testbed-binaries:
	FORCE=1 bash hack/build-testbed.sh

crds:
	@bash hack/setup.sh
	.venv/bin/swarmops crds

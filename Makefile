# The two commands of the README: `make demo` (the whole flow on the default model) and
# `make test` (everything CI runs). Both install what they need first.
CARGO ?= cargo

.PHONY: setup demo demo-full test bench
setup:
	scripts/bootstrap.sh

demo: setup
	$(CARGO) run --release -p finerank -- demo

demo-full: setup
	$(CARGO) run --release -p finerank -- demo --full --out runs/demo-full

test: setup
	scripts/test.sh

bench: setup
	$(CARGO) run --release -p finerank -- bench

# The README's two commands are `make demo` and `make test`; both bootstrap themselves.
.PHONY: demo test bootstrap lint bench clean

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bootstrap:
	scripts/bootstrap.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

bench: bootstrap
	.venv/bin/python scripts/bench/crypto.py

clean:
	rm -rf .venv node_modules .pytest_cache .mypy_cache .ruff_cache

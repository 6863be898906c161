# Every target builds its own virtual environment first, so a fresh clone needs only
# python3 (3.11+), and, for the tests' real components, root with apt-get.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the integration tests start for real (sshd on loopback, systemd in a namespace).
DEBIAN_PACKAGES := openssh-server openssh-client systemd util-linux procps prometheus-alertmanager nginx \
                   prometheus haproxy chromium chromium-driver fonts-noto-color-emoji \
                   postgresql git sqlite3 coreutils findutils

.PHONY: install system-deps test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@# Optimized bytecode for `opsgate run` (bot/launch.py); without write access to the
	@# standard library it says so and opsgate runs plain.
	-$(BIN)/opsgate precompile
	touch $(STAMP)

install: $(STAMP)

# Installs only what is missing; without root it says what to install and carries on, and
# the tests that need those components skip with that reason (under CI they fail instead).
# A policy-rc.d that denies service starts is put in place for the install if there is none:
# the packages' own services (sshd, Alertmanager on 0.0.0.0) must not start on the machine.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing:$$missing"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; [ -n "$$guard" ] && rm -f /usr/sbin/policy-rc.d; [ $$status = 0 ] || exit $$status; \
	else echo "not root: please install$$missing"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/opsgate demo

bench: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .pytest-work

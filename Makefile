# The README's two set-up commands: `make demo` and `make test`.
# Each works on a fresh Debian machine (as root, or with sudo): it installs the
# system packages that are missing, creates the virtualenv and installs the agent.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SECONDS ?= 60

.PHONY: arm64-check browser bundle demo i18n test lint install system-packages

demo: $(VENV)/.installed
	$(BIN)/edge-agent demo --seconds $(DEMO_SECONDS)

test: $(VENV)/.installed browser
	$(BIN)/ruff check .
	$(BIN)/pytest

# The web view's browser tests drive Debian's chromium through Playwright; a CJK font
# makes their screenshots of the Chinese page readable.
browser:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update || echo "apt-get update failed; trying the cached package lists"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# New messages marked with _() go into the Chinese catalog, to be translated there.
i18n: $(VENV)/.installed
	pot=$$(mktemp) && $(BIN)/pybabel extract -F babel.cfg -k _ --no-location --project edge-agent -o $$pot . \
		&& $(BIN)/pybabel update -i $$pot -d edge_agent/locale -D edge_agent -w 100 \
		--no-fuzzy-matching; rm -f $$pot

lint: $(VENV)/.installed
	$(BIN)/ruff check .

# The offline installer bundle for one architecture (x86_64 or aarch64): wheels for
# CPython 3.11 on that platform, the unit, install.sh and its checksums (bundle/).
ARCH ?= $(shell uname -m)
bundle: $(VENV)/.installed
	$(BIN)/python bundle/build.py --arch $(ARCH)

# The aarch64 bundle installed offline and run in a Debian bookworm arm64 root
# filesystem under qemu-user-static (debootstrap; about 3 min the first time).
arm64-check: $(VENV)/.installed
	$(SUDO) env PYTHON=$(BIN)/python sh bundle/arm64_check.sh

# The service on this gateway, running this checkout's agent. For a production
# gateway install the agent under /opt instead (systemd/README.md).
install: $(VENV)/.installed
	$(SUDO) $(BIN)/edge-agent install

# mosquitto: the demo's and the tests' broker; nats-server: the clustered broker of
# the failover tests; socat: pseudo-terminals for serial tests; systemd:
# systemd-analyze checks the unit file; python3-venv: Debian's python3 has no venv
# module without it.
system-packages:
	@missing=""; \
	{ command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null || missing="$$missing mosquitto"; \
	command -v socat >/dev/null || missing="$$missing socat"; \
	{ command -v nats-server || [ -x /usr/sbin/nats-server ]; } >/dev/null || missing="$$missing nats-server"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update || echo "apt-get update failed; trying the cached package lists"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | system-packages
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

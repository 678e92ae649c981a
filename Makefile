# kvmini: `make run` boots the demo guests, `make test` runs the whole test suite.
# Both install what a fresh Debian machine lacks (as root, with apt-get) and build
# everything they need first.

CARGO  ?= cargo
KVMINI := target/release/kvmini
GUESTS := guest/build

# Debian packages the build needs, by the command that shows they are there.
DEB_TOOLS := as:binutils ld:binutils objcopy:binutils gcc:gcc make:make

.PHONY: all deps build guests run test lint bench clean

all: build guests

# Installs missing Debian packages; without root it says what to install instead.
deps:
	@missing=""; for pair in $(DEB_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
	      || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
	  else \
	    echo "missing packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

build: deps
	$(CARGO) build --release

guests: deps
	$(MAKE) -C guest

# Boots each demo guest and shows what it printed and how it ended.
run: build guests
	@for g in "hello16.bin --mode real" "hello32.bin --mode protected" \
	          "hello64.bin --mode long" "modeswitch.bin --mode real" "hello.elf"; do \
	  echo "\$$ kvmini run $(GUESTS)/$$g"; \
	  $(KVMINI) run $(GUESTS)/$$g; \
	  echo "[exit status $$?]"; echo; \
	done

test: guests
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
	$(MAKE) -C guest clean

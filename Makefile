# kvmini: `make run` boots the demo guests, `make test` runs the whole test suite.
# Both install what a fresh Debian machine lacks (as root, with apt-get) and build
# everything they need first.

CARGO  ?= cargo
# Static release build (see .cargo/config.toml).
KVMINI := target/x86_64-unknown-linux-gnu/release/kvmini
# The static build needs glibc's static libraries (libc.a: Debian's libc6-dev, which gcc
# brings; Fedora's glibc-static). Where the C compiler cannot link a static program, kvmini
# is built dynamically instead, with a note: it works the same and starts a little slower.
STATIC_OK := $(shell printf 'int main(void){return 0;}' | $${CC:-cc} -static -x c - -o /dev/null 2>/dev/null && echo yes)
ifneq ($(STATIC_OK),yes)
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS := -C target-feature=-crt-static
$(info note: no static glibc here (libc.a); building kvmini as a dynamic executable)
endif
GUESTS := guest/build

# Debian packages the build needs, by the command that shows they are there; gdb drives
# kvmini's GDB stub in tests/gdb.rs (docs/gdb.md).
DEB_TOOLS := as:binutils ld:binutils objcopy:binutils gcc:gcc make:make gdb:gdb

.PHONY: all deps build guests run test lint bench clean linux linux-qemu install uninstall oci-runtime

all: build guests

include guest/packages.mk

# Installs missing Debian packages; without root it says what to install instead.
deps:
	@$(call install-missing,$(DEB_TOOLS))
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

build: deps
	$(CARGO) build --release -p kvmini-cli

guests: deps
	$(MAKE) -C guest

# Boots each demo guest and shows what it printed and how it ended.
run: build guests
	@for g in "hello16.bin --mode real" "hello32.bin --mode protected" \
	          "hello64.bin --mode long" "modeswitch.bin --mode real" "hello.elf" \
	          "multiboot2.bin --cmdline hello --module guest/README.md"; do \
	  echo "\$$ kvmini run $(GUESTS)/$$g"; \
	  $(KVMINI) run $(GUESTS)/$$g; \
	  echo "[exit status $$?]"; echo; \
	done

# The Linux guest (guest/linux/): a 6.1 kernel built from Debian's
# linux-source-6.1, a busybox initramfs and the same files as an ext4 root
# disk, into guest/build/vmlinux, bzImage, initramfs.cpio and rootfs.ext4.
# The first build takes minutes; later ones only redo what changed.  See
# docs/linux-guest.md.
linux:
	$(MAKE) -C guest/linux

# The Linux guest, booted once with kvmini.snapshot=1 and saved when its user space is ready
# for work: `kvmini restore $(SNAPSHOT) -- CMD...` runs CMD in it in milliseconds.  Made
# again when the kernel, the initramfs or kvmini change.  See docs/snapshots.md.
SNAPSHOT := $(GUESTS)/linux-snapshot
SNAPSHOT_CMDLINE := console=ttyS0 reboot=k panic=-1 kvmini.snapshot=1

.PHONY: snapshot
snapshot: build linux
	@$(MAKE) --no-print-directory $(SNAPSHOT)/state

# Only once the kernel, the initramfs and kvmini are made: their times decide.
$(SNAPSHOT)/state: $(GUESTS)/vmlinux $(GUESTS)/initramfs.cpio $(KVMINI)
	rm -rf $(SNAPSHOT)
	$(KVMINI) run $(GUESTS)/vmlinux --initrd $(GUESTS)/initramfs.cpio --mem 128M \
	  --cmdline "$(SNAPSHOT_CMDLINE)" --snapshot $(SNAPSHOT) --timeout 900 </dev/null

# The snapshot `kvmini oci` restores for each container (docs/oci.md): the Linux guest
# booted with kvmini.snapshot=1, 128 MiB, one vCPU and three placeholder disks it does not
# mount (the root disk, 256 MiB; the spec disk, 64 KiB, read-only; the bind-mount copies,
# 64 MiB, read-only), saved when its user space is up.  These values are oci/src/snapshot.rs's.
OCI_SNAPSHOT := $(GUESTS)/oci-snapshot

.PHONY: oci-snapshot
oci-snapshot: build linux
	@$(MAKE) --no-print-directory $(OCI_SNAPSHOT)/state

$(OCI_SNAPSHOT)/state: $(GUESTS)/vmlinux $(GUESTS)/initramfs.cpio $(KVMINI)
	rm -rf $(OCI_SNAPSHOT) $(OCI_SNAPSHOT).disks
	mkdir -p $(OCI_SNAPSHOT).disks
	truncate -s 256M $(OCI_SNAPSHOT).disks/root.img
	truncate -s 64K $(OCI_SNAPSHOT).disks/spec.img
	truncate -s 64M $(OCI_SNAPSHOT).disks/binds.img
	$(KVMINI) run $(GUESTS)/vmlinux --initrd $(GUESTS)/initramfs.cpio --mem 128M --cpus 1 \
	  --cmdline "console=ttyS0 reboot=k panic=-1 loglevel=1" \
	  --disk $(OCI_SNAPSHOT).disks/root.img --disk $(OCI_SNAPSHOT).disks/spec.img,ro \
	  --disk $(OCI_SNAPSHOT).disks/binds.img,ro \
	  --snapshot $(OCI_SNAPSHOT) --timeout 900 -- /bin/oci-init --snapshot </dev/null
	mv $(OCI_SNAPSHOT).disks/binds.img $(OCI_SNAPSHOT)/binds.img
	rm -rf $(OCI_SNAPSHOT).disks

# Boots the Linux guest under QEMU: CMD="uname -r", SMP=2, KERNEL=../build/bzImage.
linux-qemu:
	$(MAKE) -C guest/linux qemu

# The whole suite: unit tests, the guests booted through the library and the binary, the
# Linux boots (the kernel is built first; minutes the first time) and restores of the Linux
# snapshot, kvmini compare against
# runc, and a short run of the benchmark so that it cannot rot.
test: guests linux snapshot oci-snapshot deps-compare
	$(CARGO) test --all-targets
	$(CARGO) run --quiet --example embed -- $(GUESTS)/hello.elf
	$(MAKE) --no-print-directory doc
	$(MAKE) --no-print-directory bench-smoke

# kvmini compare's container side and kvmini oci's tests: an OCI runtime (runc), podman (the
# engine the OCI tests drive) and Debian's static busybox (the containers' root file
# system). Installed when missing and root; otherwise those tests skip with a message.
.PHONY: deps-compare
deps-compare:
	@$(call install-missing,runc:runc podman:podman =busybox-static,kvmini compare's and kvmini oci's tests skip without them)

# The benchmark (benches/, results in bench/): start-up of kvmini, of QEMU's microvm
# and of benches/floor.c (the least any VMM must do), exit cost, memory overhead
# and density.  Prints a table and writes bench/results.json; numbers never
# fail it, a broken run does.  FIRECRACKER=/path/to/firecracker adds
# Firecracker; BENCH_ARGS="--runs 10" passes options (--help lists them).
BENCH_FLOOR := bench/build/floor
BENCH_FLOORS := $(BENCH_FLOOR) bench/build/floor_restore
BENCH_ARGS  ?=

.PHONY: bench-smoke bench-peers

BENCH := $(CARGO) run --release --quiet -p kvmini-bench -- --kvmini $(KVMINI)

bench: build guests $(BENCH_FLOORS) bench-peers
	$(BENCH) $(BENCH_ARGS)

# A short run of the whole benchmark, part of `make test` so that it cannot
# rot.  Peers that are absent are reported as not installed.
bench-smoke: build guests $(BENCH_FLOORS)
	$(BENCH) --runs 2 --warmup 0 --density 5 --settle-ms 300 \
	  --linux-restores 1 --restore-density 2 \
	  --json bench/build/smoke.json

# The floors: benches/floor.c (start-up) and benches/floor_restore.c (resuming the
# saved count.bin guest), sharing benches/floor_io.h.
$(BENCH_FLOORS): bench/build/%: benches/%.c benches/floor_io.h | deps
	@mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -o $@ $<

# QEMU for the comparison: installed when missing (as root), else reported.
bench-peers:
	@$(call install-missing,qemu-system-x86_64:qemu-system-x86,QEMU will be reported as not installed)

# The Linux boot benchmark (benches/src/sections/linux/), only that section: LINUX_BOOTS
# boots each, interleaved, of guest/build/vmlinux (PVH) and bzImage with the
# initramfs running `uname -r`, under kvmini and under QEMU's microvm given
# kvmini's kernel command line; in the same rounds, when guest/build/linux-snapshot
# exists (make snapshot), restores of it running `uname -r` and runc's busybox
# `uname -r`, and the cold boot / restore ratio.  ~15-25 minutes on a
# software-virtualized host.  Prints a table and writes bench/build/linux-results.json.
LINUX_BOOTS ?= 5
.PHONY: bench-linux
bench-linux: build linux bench-peers
	$(BENCH) --linux $(LINUX_BOOTS)

# The virtio devices of the Linux guest under kvmini and QEMU's microvm: a
# disk benchmark run by the guest (blkbench: sequential and random direct I/O),
# DEVICE_ROUNDS rounds, medians.  ~2 minutes a round on a software-virtualized
# host.  Prints a table and writes bench/build/devices-results.json.
DEVICE_ROUNDS ?= 3
.PHONY: bench-devices
bench-devices: build linux bench-peers
	$(BENCH) --devices $(DEVICE_ROUNDS)

# The soak: 1,000 sequential runs of hello.elf and 200 at once (every status,
# the host's open files and each run's peak RSS must hold), then the Linux
# guest restored from its snapshot running a loop of commands for 10 minutes
# (kvmini's descriptors and memory sampled and checked flat).  About 12
# minutes.  SOAK_ARGS="--sequential 100 --parallel 50 --linux-minutes 1".
SOAK_ARGS ?=
.PHONY: soak
soak: build guests snapshot
	$(CARGO) run --release --quiet -p kvmini-bench --bin soak -- --kvmini $(KVMINI) $(SOAK_ARGS)

# Installs kvmini, kvmini-manual (which `kvmini completions` and `kvmini man` run), the man
# pages and the bash, zsh and fish completions under $(DESTDIR)$(PREFIX).
PREFIX  ?= /usr/local
BINDIR  := $(DESTDIR)$(PREFIX)/bin
MANDIR  := $(DESTDIR)$(PREFIX)/share/man/man1
BASHDIR := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR  := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
GUESTDIR := $(DESTDIR)$(PREFIX)/share/kvmini/guest
INSTALLED := $(BINDIR)/kvmini $(BINDIR)/kvmini-manual $(BINDIR)/kvmini-runtime $(BASHDIR)/kvmini \
	$(ZSHDIR)/_kvmini $(FISHDIR)/kvmini.fish $(GUESTDIR)/vmlinux $(GUESTDIR)/initramfs.cpio

install: build
	install -d $(BINDIR) $(MANDIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	install -m 755 $(KVMINI) $(KVMINI)-manual $(KVMINI)-runtime $(BINDIR)/
	$(KVMINI)-manual man $(MANDIR) >/dev/null
	$(KVMINI)-manual completions bash > $(BASHDIR)/kvmini
	$(KVMINI)-manual completions zsh > $(ZSHDIR)/_kvmini
	$(KVMINI)-manual completions fish > $(FISHDIR)/kvmini.fish
	@if [ -f $(GUESTS)/vmlinux ] && [ -f $(GUESTS)/initramfs.cpio ]; then \
	  install -d $(GUESTDIR) && install -m 644 $(GUESTS)/vmlinux $(GUESTS)/initramfs.cpio $(GUESTDIR)/; \
	else echo "note: no Linux guest built (make linux): kvmini oci will look for it in KVMINI_OCI_GUEST"; fi
	@if [ -f $(OCI_SNAPSHOT)/state ]; then \
	  rm -rf $(GUESTDIR)/oci-snapshot && cp -r $(OCI_SNAPSHOT) $(GUESTDIR)/oci-snapshot; \
	else echo "note: no OCI snapshot (make oci-snapshot): kvmini oci will boot each container cold"; fi

# kvmini-runtime, the OCI runtime (runc's command line, docs/oci.md; `kvmini oci` runs it),
# beside the built kvmini, for `podman --runtime PATH`: `make build` makes it too.
oci-runtime: build

uninstall:
	rm -f $(INSTALLED) $(MANDIR)/kvmini.1 $(MANDIR)/kvmini-*.1
	rm -rf $(GUESTDIR)/oci-snapshot
	-rmdir $(GUESTDIR) $(dir $(GUESTDIR)) 2>/dev/null

lint: doc
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# The API documentation (target/x86_64-unknown-linux-gnu/doc/kvmini/index.html): every
# public item has rustdoc (the library denies missing docs) and no link may be broken.
.PHONY: doc
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace

clean:
	$(CARGO) clean
	$(MAKE) -C guest clean

# Fuzzing (fuzz/README.md): every cargo-fuzz target for FUZZ_SECONDS, one after the other
# (FUZZ_TARGETS="image buses" for some), then EXIT_FUZZ_COUNT random and mutated guests
# through the exit path with real KVM (tests/exit_fuzz.rs; EXIT_FUZZ_SEED picks them).
# Installs a nightly toolchain and cargo-fuzz when missing. The corpora grow in
# fuzz/corpus/ (not committed), seeded from the built guests and fuzz/seeds/. A crash stops
# the run with the input in fuzz/artifacts/<target>/; fuzz/README.md says how it becomes a
# regression test.
FUZZ_SECONDS    ?= 30
FUZZ_TARGETS    ?= image boot_args options buses snapshot_state virtio
FUZZ_ARGS       ?=
EXIT_FUZZ_COUNT ?= 300
EXIT_FUZZ_SEED  ?=
FUZZ_CORPUS     := fuzz/corpus

.PHONY: fuzz fuzz-deps fuzz-seeds
fuzz: fuzz-deps fuzz-seeds
	cd fuzz && $(CARGO) +nightly fuzz build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz target $$t, $(FUZZ_SECONDS) s"; \
	  seeds=; [ -d fuzz/seeds/$$t ] && seeds=seeds/$$t; \
	  (cd fuzz && $(CARGO) +nightly fuzz run $$t corpus/$$t $$seeds -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_ARGS)); \
	done
	KVMINI_EXIT_FUZZ_COUNT=$(EXIT_FUZZ_COUNT) $(if $(EXIT_FUZZ_SEED),KVMINI_EXIT_FUZZ_SEED=$(EXIT_FUZZ_SEED)) \
	  $(CARGO) test -p kvmini-cli --test exit_fuzz -- --nocapture

fuzz-deps: deps
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz

# The built guests as seeds of the image target, behind its 12-byte header (zero: format
# detected; raw images also in protected and long mode), at most 1 MiB of each; a snapshot
# of count.bin (its state without the header) for the snapshot target.
fuzz-seeds: build guests
	@mkdir -p $(addprefix $(FUZZ_CORPUS)/,$(FUZZ_TARGETS) image snapshot_state)
	@for f in $(wildcard $(GUESTS)/*.bin $(GUESTS)/*.elf $(GUESTS)/bzImage $(GUESTS)/vmlinux); do \
	  n=$$(basename $$f); \
	  for h in '\000' '\001' '\005' '\011'; do \
	    { printf "$$h"; head -c 11 /dev/zero; head -c 1048576 $$f; } \
	      > $(FUZZ_CORPUS)/image/seed-$$(printf "$$h" | od -An -tx1 | tr -d ' ')-$$n; \
	  done; \
	done
	@if [ ! -f $(FUZZ_CORPUS)/snapshot_state/seed-count ]; then \
	  rm -rf $(FUZZ_CORPUS)/.count-snapshot; \
	  $(KVMINI) run $(GUESTS)/count.bin --mode long --timeout 30 \
	    --snapshot $(FUZZ_CORPUS)/.count-snapshot >/dev/null 2>&1; \
	  if [ -f $(FUZZ_CORPUS)/.count-snapshot/state ]; then \
	    tail -c +37 $(FUZZ_CORPUS)/.count-snapshot/state > $(FUZZ_CORPUS)/snapshot_state/seed-count; \
	  else echo "no KVM: the snapshot target starts without a saved state"; fi; \
	  rm -rf $(FUZZ_CORPUS)/.count-snapshot; \
	fi

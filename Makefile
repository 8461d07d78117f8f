# SPDX-License-Identifier: MIT
# nbd-serverd: hand-written GNU Makefile.
#
# Layout: every src/<module>/*.c except program entry points goes into one
# static library; each tests/unit/test-*.c is its own Check binary linked
# with the fixtures and that library.  Sanitizer builds live in their own
# build directory so that their objects never mix with the normal ones.

CC ?= gcc
PKG_CONFIG ?= pkg-config
WERROR ?= 1
SANITIZE ?=

# CC=clang builds go to build-clang*, next to gcc's build*.
CC_IS_CLANG := $(if $(findstring clang,$(shell $(CC) --version 2>/dev/null)),1)
BUILD_PREFIX := build$(if $(CC_IS_CLANG),-clang)
ifeq ($(SANITIZE),)
  BUILD ?= $(BUILD_PREFIX)
else ifeq ($(SANITIZE),address,undefined)
  BUILD ?= $(BUILD_PREFIX)-asan
else ifeq ($(SANITIZE),thread)
  BUILD ?= $(BUILD_PREFIX)-tsan
else
  $(error SANITIZE must be empty, address,undefined or thread)
endif

PKGS := liburing gnutls inih libmicrohttpd json-c
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wvla -Wformat=2 -Wstrict-prototypes \
        -Wmissing-prototypes -Wimplicit-fallthrough -Wundef
# clang's thread-safety analysis checks the GUARDED_BY, REQUIRES, ACQUIRE
# and RELEASE attributes (include/nbdsrv/compiler.h, mutex.h).
ifeq ($(CC_IS_CLANG),1)
  WARN += -Wthread-safety
endif
ifeq ($(WERROR),1)
  WARN += -Werror
endif

OPT ?= -O2 -g
CFLAGS ?= $(OPT)

# Release hardening, on by default: stack protector, PIE, full RELRO
# (relocations read-only and every symbol bound at start), and
# _FORTIFY_SOURCE=2 when optimising.  These come before CPPFLAGS, CFLAGS
# and LDFLAGS, so a packager's own flags win (-fno-stack-protector,
# -no-pie, a different _FORTIFY_SOURCE level); HARDEN=0 drops them all.
# Sanitizer builds turn _FORTIFY_SOURCE off: the sanitizer runtimes do
# not intercept most __*_chk functions, so fortified calls would hide
# accesses from them (google/sanitizers#247).
HARDEN ?= 1
HARDEN_CFLAGS :=
HARDEN_LDFLAGS :=
ifeq ($(HARDEN),1)
  HARDEN_CFLAGS += -fstack-protector-strong -fPIE
  HARDEN_LDFLAGS += -pie -Wl,-z,relro,-z,now
  LAST_OPT := $(lastword $(filter -O%,$(CFLAGS)))
  ifneq ($(filter-out -O0,$(LAST_OPT)),)
    ifeq ($(SANITIZE)$(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)),)
      HARDEN_CFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2
    endif
  endif
endif

# The warnings come after CPPFLAGS and CFLAGS, so that flags from the
# environment (dpkg-buildflags' -Wformat, for one) cannot weaken them or
# drop -Werror; WERROR=0 is the way to build without it.
ALL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Iinclude $(HARDEN_CFLAGS) \
              $(CPPFLAGS) $(CFLAGS) $(WARN) -fno-strict-aliasing -pthread \
              $(PKG_CFLAGS)
ALL_LDFLAGS := -pthread $(HARDEN_LDFLAGS) $(LDFLAGS)
ifneq ($(SANITIZE),)
  ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -O1 \
                -DNBDSRV_SANITIZE -U_FORTIFY_SOURCE
  ALL_LDFLAGS += -fsanitize=$(SANITIZE)
endif
LIBS := $(PKG_LIBS)
# The RBD backend is built when librbd's headers are there (librbd-dev
# and librados-dev ship no pkg-config files); otherwise rbd exports are
# refused with a message saying so.
HAVE_RBD := $(if $(wildcard /usr/include/rbd/librbd.h),1,)
ifeq ($(HAVE_RBD),1)
  ALL_CFLAGS += -DNBDSRV_HAVE_RBD
  LIBS += -lrbd -lrados
endif

# Programs: src/<dir>/<name>-main.c becomes $(BUILD)/<name>.
PROG_SRCS := $(wildcard src/*/*-main.c)
LIB_SRCS := $(filter-out $(PROG_SRCS),$(wildcard src/*/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libnbdsrv.a
PROGS := $(foreach s,$(PROG_SRCS),$(BUILD)/$(patsubst %-main.c,%,$(notdir $(s))))

UNIT_SRCS := $(wildcard tests/unit/test-*.c)
FIXTURE_SRCS := $(wildcard tests/unit/fixture-*.c)
FIXTURE_OBJS := $(FIXTURE_SRCS:%.c=$(BUILD)/%.o)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
BENCH_SRCS := $(wildcard tests/bench/bench-*.c)
BENCH_BINS := $(BENCH_SRCS:%.c=$(BUILD)/%)
# Stand-alone test programs the interop scripts run (tests/tools/NAME.c
# -> $(BUILD)/tests/tools/NAME); they use GnuTLS, not our library.
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(TOOL_SRCS:%.c=$(BUILD)/%)

DEB_BUILD := build-essential pkg-config liburing-dev libgnutls28-dev check \
             libinih-dev libmicrohttpd-dev libjson-c-dev librbd-dev \
             librados-dev
DEB_TEST := gnutls-bin nbdkit qemu-utils nbd-server libnbd-bin \
            python3-libnbd fio systemd groff-base man-db clang valgrind \
            codespell clang-format debootstrap prometheus curl gnuplot-nox linux-perf \
            ceph-mon ceph-osd ceph-mgr ceph-common qemu-block-extra
# Building and checking the Debian packages (make deb, make check-deb).
DEB_PACKAGING := debhelper dpkg-dev lintian
DEB_PKGS := $(DEB_BUILD) $(DEB_TEST) $(DEB_PACKAGING)
# Only for the libFuzzer targets: clang, and the runtime that links
# -fsanitize=fuzzer (merely recommended by clang's packages).
DEB_FUZZ := clang libclang-rt-14-dev

.SECONDARY:

.PHONY: FORCE all check check-unit check-interop check-asan check-tsan \
        check-clang check-valgrind check-spelling analyze bench bench-threads bench-metrics bench-client bench-profile \
        bench-runtime soak deps fuzz-deps clean format check-format serve \
        install fuzz fuzz-regress fuzz-ci check-faults check-load check-modern \
        check-nbd-tester check-rbd bench-rbd chroot-trixie programs deb check-deb

# Installation directories; DESTDIR is prepended to each.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions

# The daemon with the test suite's fault-injection hook: the interop
# tests' only way to make an export's storage fail or stall (see
# tests/support/fault-hook.c).  Never installed.
TEST_DAEMON := $(BUILD)/tests/nbd-serverd-test

all: $(LIB) $(PROGS) $(UNIT_BINS) $(BENCH_BINS) $(TOOL_BINS) \
     $(TEST_DAEMON)

# Only the installed programs (debian/rules builds these).
programs: $(PROGS)

# Every object and link depends on a stamp holding the compiler and flags,
# rewritten only when they change, so that a build directory never mixes
# objects built with different flags (new defaults, CC=, CFLAGS=).
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CC) $(ALL_CFLAGS) | $(ALL_LDFLAGS) | $(LIBS)
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' >$@

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# glibc's fortified longjmp refuses to jump between stacks, so the one file
# that switches stacks is built without _FORTIFY_SOURCE.
$(BUILD)/src/coro/coro-switch.o: ALL_CFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=0

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# One link rule per program: src/DIR/NAME-main.c -> $(BUILD)/NAME.
define program_rule
$(BUILD)/$(patsubst %-main.c,%,$(notdir $(1))): $(BUILD)/$(1:.c=.o) $(LIB) $(FLAGS_STAMP)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$(filter %.o %.a,$$^) $$(LIBS)
endef
$(foreach s,$(PROG_SRCS),$(eval $(call program_rule,$(s))))

$(BUILD)/tests/unit/test-%: $(BUILD)/tests/unit/test-%.o $(FIXTURE_OBJS) $(LIB) \
                           $(FLAGS_STAMP)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o %.a,$^) $(CHECK_LIBS) $(LIBS)

$(BUILD)/tests/unit/%.o: ALL_CFLAGS += $(CHECK_CFLAGS)

$(TEST_DAEMON): $(BUILD)/src/server/nbd-serverd-main.o \
                $(BUILD)/tests/support/fault-hook.o $(LIB) $(FLAGS_STAMP)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LIBS)

$(BUILD)/tests/bench/bench-%: $(BUILD)/tests/bench/bench-%.o $(LIB) $(FLAGS_STAMP)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LIBS)

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(FLAGS_STAMP)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS)

check: check-unit check-interop

check-unit: $(UNIT_BINS)
	@tests/run-unit.sh $(UNIT_BINS)

check-interop: all
	@tests/run-interop.sh $(BUILD)

# Fault and load tests, not part of `make check`: kill -9 durability,
# backend errors (EIO, ENOSPC), clients that stop reading or vanish
# (tests/faults/), and 1,000 connections plus 100 hostile ones
# (tests/load/).  They mount a tmpfs and FUSE file systems, so they want
# root; without it they skip, and fail under CI=true.
check-faults: all
	@tests/run-interop.sh $(BUILD) tests/faults

check-load: all
	@tests/run-interop.sh $(BUILD) tests/load

# Today's clients and servers (libnbd 1.22, qemu 10, nbdkit 1.42) from a
# Debian trixie chroot, against nbd-serverd and nbdc built here
# (tests/modern/), and the NBD reference test suite, nbd-tester-client
# built from Debian's nbd source package in that chroot
# (tests/nbd-tester/).  The chroot is built once and cached outside the
# tree, in $(NBDSRV_CHROOT) (validated before each use, rebuilt when
# stale; see tests/chroot-trixie.sh).  They want root, debootstrap and
# Debian's mirror; without them they skip, and fail under CI=true.
NBDSRV_CHROOT ?= /var/cache/nbd-serverd-tests/trixie
export NBDSRV_CHROOT

chroot-trixie:
	@tests/chroot-trixie.sh ensure tester

check-modern: all
	@tests/chroot-trixie.sh ensure
	@tests/chroot-trixie.sh run $(BUILD) tests/modern

# The RBD backend against a real single-node Ceph cluster that the test
# starts in a temporary directory (tests/ceph-cluster.sh, one mon and one
# BlueStore OSD on 127.0.0.1) and stops: tests/rbd/*.sh.  Without Ceph
# or a build with the RBD backend it skips, and fails under CI=true.
check-rbd: all
	@tests/check-rbd.sh $(BUILD)

check-nbd-tester: all
	@tests/chroot-trixie.sh ensure tester
	@tests/chroot-trixie.sh run $(BUILD) tests/nbd-tester

check-asan:
	$(MAKE) check-unit SANITIZE=address,undefined

check-tsan:
	$(MAKE) check-unit SANITIZE=thread

# The unit suites under Valgrind's memcheck, built in build-valgrind/ with
# NBDSRV_REQUIRE_VALGRIND, which makes a missing <valgrind/memcheck.h> an
# error instead of a build whose coroutine stacks Valgrind does not know.
# Check's fork mode stays on: test-chan expects one test to abort, and
# test-coro forks a child that overflows its stack.  Valgrind follows
# fork() by itself; without --trace-children the certtool runs of the TLS
# tests stay outside it.  A memcheck error or leak in a test makes that
# test's child exit 1, which Check reports as an error.  Timeouts are
# stretched by CK_TIMEOUT_MULTIPLIER.  Expected in a passing run: the
# guard-page test's SIGSEGV, a "possibly lost" report for the loop threads
# of the test that aborts on purpose (that child dies of SIGABRT, as the
# test wants), and warnings about the loop-device ioctls of test-backend.
# tests/valgrind.supp holds one suppression: what shared libraries'
# constructors allocate and never free before main (libnl's, which
# librados brings in with the RBD backend).
VALGRIND ?= valgrind
VALGRIND_FLAGS ?= -q --tool=memcheck --error-exitcode=1 --leak-check=full \
                  --num-callers=30 --suppressions=$(CURDIR)/tests/valgrind.supp
VALGRIND_TIMEOUT_MULTIPLIER ?= 10
check-valgrind:
	CK_TIMEOUT_MULTIPLIER=$(VALGRIND_TIMEOUT_MULTIPLIER) \
	UNIT_WRAPPER="$(VALGRIND) $(VALGRIND_FLAGS)" \
	    $(MAKE) check-unit SANITIZE= BUILD=$(BUILD_PREFIX)-valgrind \
	    CPPFLAGS="$(CPPFLAGS) -DNBDSRV_REQUIRE_VALGRIND"

# gcc's static analyzer over src/, rebuilt from scratch in build-analyze/
# each time.  It prints the findings, saves them in analyze.log and fails
# only if the build does, not on findings: with gcc 12 all of them so far
# are false positives (it cannot see across files that err_set returns a
# negative errno, so it follows error paths that look like success), so
# it is not part of CI.
analyze:
	@mkdir -p build-analyze
	@$(MAKE) -B CC=gcc SANITIZE= BUILD=build-analyze WERROR=0 \
	    CFLAGS="$(CFLAGS) -fanalyzer" build-analyze/libnbdsrv.a \
	    $(PROG_SRCS:%.c=build-analyze/%.o) >build-analyze/analyze.log 2>&1; \
	st=$$?; grep -v '^\(cc\|gcc\|ar\|rm\|make\)' build-analyze/analyze.log; \
	echo "analyze: $$(grep -c 'warning: .*\[-Wanalyzer' build-analyze/analyze.log)" \
	    "findings, log in build-analyze/analyze.log"; exit $$st

# Everything built with clang (into build-clang/), then the unit suites.
# clang builds run the thread-safety analysis (-Wthread-safety, with
# -Werror); the fields it guards through accessors (server_locked,
# conn_links) must not be reached around them.
check-clang:
	@if grep -rnE '(->|\.)(shared_|links_)\b' src tests --include='*.c'; then \
	    echo "check-clang: reach shared_/links_ only through server_locked() and conn_links()" >&2; \
	    exit 1; fi
	$(MAKE) all CC=clang
	$(MAKE) check-unit CC=clang

bench-runtime: $(BUILD)/tests/bench/bench-runtime
	$(BUILD)/tests/bench/bench-runtime

DEMO_IMAGE := demo/demo.img
serve: $(BUILD)/nbd-serverd
	@mkdir -p $(dir $(DEMO_IMAGE))
	@[ -f $(DEMO_IMAGE) ] || truncate -s 1G $(DEMO_IMAGE)
	@echo "Serving $(DEMO_IMAGE) (1 GiB, sparse) as nbd://127.0.0.1/demo; Ctrl-C stops it."
	@echo "Try, in another terminal:"
	@echo "    nbdinfo nbd://127.0.0.1/demo"
	@echo "    qemu-img info nbd://127.0.0.1/demo"
	$(BUILD)/nbd-serverd -f -l 127.0.0.1:10809 -e demo=$(CURDIR)/$(DEMO_IMAGE)

bench: all
	bench/bench-servers.sh $(BUILD)

# nbd-serverd's RBD backend against qemu-nbd's rbd driver on one image
# of a throwaway Ceph cluster, fio on make bench's workloads
# (bench/bench-rbd.py; BENCH_RUNS, BENCH_RUNTIME, BENCH_RAMP).
bench-rbd: all
	bench/bench-rbd.py $(BUILD)

bench-threads: all
	bench/bench-threads.sh $(BUILD)

bench-metrics: all
	bench/bench-metrics.sh $(BUILD)

bench-client: all
	bench/bench-client.sh $(BUILD)

# perf samples of the server sorted by system call, as µs per request
# (bench/bench-profile.sh; PROFILE_WORKLOADS, PROFILE_TRANSPORT, ...).
bench-profile: all
	bench/bench-profile.sh $(BUILD)

# Long mixed load with leak checks; SOAK_TIME seconds (default 600).
soak: all
	BUILD=$(BUILD) tests/soak/soak.sh

# Installs the Debian packages of list $(1) that are missing when run as
# root, or prints the apt-get line.
define deb_install
@missing=""; for p in $(1); do \
    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
done; \
if [ -z "$$missing" ]; then echo "all $(2) packages are installed"; \
elif [ "$$(id -u)" = 0 ]; then \
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
else echo "run as root: apt-get install -y$$missing"; fi
endef

deps:
	$(call deb_install,$(DEB_PKGS),build and test)

fuzz-deps:
	$(call deb_install,$(DEB_FUZZ),fuzzing)

# The daemon and nbd-serverd-ctl go to sbin, other programs to bin; the
# bash completions to BASHCOMPDIR.  The configuration
# example is installed as nbd-serverd.conf.example, and as
# nbd-serverd.conf unless one exists; the units get the real paths.
SBIN_PROGS := $(BUILD)/nbd-serverd $(BUILD)/nbd-serverd-ctl
install: $(PROGS)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(SYSCONFDIR)/nbd-serverd $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(BASHCOMPDIR)
	for p in $(SBIN_PROGS); do \
	    install -m 755 $$p $(DESTDIR)$(SBINDIR)/; done
	for p in $(filter-out $(SBIN_PROGS),$(PROGS)); do \
	    install -m 755 $$p $(DESTDIR)$(BINDIR)/; done
	install -m 644 bash-completion/* $(DESTDIR)$(BASHCOMPDIR)/
	install -m 644 man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 644 man/*.8 $(DESTDIR)$(MANDIR)/man8/
	for m in $(wildcard man/*.1); do \
	    install -d $(DESTDIR)$(MANDIR)/man1 && \
	    install -m 644 $$m $(DESTDIR)$(MANDIR)/man1/; done
	install -m 644 conf/nbd-serverd.conf \
	    $(DESTDIR)$(SYSCONFDIR)/nbd-serverd/nbd-serverd.conf.example
	[ -e $(DESTDIR)$(SYSCONFDIR)/nbd-serverd/nbd-serverd.conf ] || \
	    install -m 644 conf/nbd-serverd.conf \
	        $(DESTDIR)$(SYSCONFDIR)/nbd-serverd/nbd-serverd.conf
	for u in nbd-serverd.service nbd-serverd.socket nbd-serverd@.service \
	    nbd-serverd@.socket; do \
	    sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' \
	        -e 's|/etc/nbd-serverd/|$(SYSCONFDIR)/nbd-serverd/|g' \
	        systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && \
	    chmod 644 $(DESTDIR)$(UNITDIR)/$$u; done

# ---- Debian packages ----
# `make deb` copies the source tree (the files git knows plus untracked
# ones it does not ignore; without git, everything but the build
# directories) to $(DEB_DIR)/stage/nbd-serverd-VERSION, runs
# dpkg-buildpackage -us -uc -b there with a clean make environment, and
# moves the .deb, .buildinfo and .changes files to $(DEB_DIR).  The
# build dependencies must be installed (make deps).
DEB_DIR := build/deb
DEB_VERSION = $(shell dpkg-parsechangelog -S Version)
deb: SHELL := /bin/bash
deb:
	@set -e; v="$(DEB_VERSION)"; [ -n "$$v" ]; \
	stage=$(DEB_DIR)/stage/nbd-serverd-$$v; \
	rm -rf $(DEB_DIR); mkdir -p $$stage; \
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git ls-files -z -c -o --exclude-standard | \
	        while IFS= read -r -d '' f; do \
	            [ ! -e "$$f" ] || printf '%s\0' "$$f"; done; \
	else \
	    find . \( -name .git -o -path './build*' -o -path ./demo \) \
	        -prune -o \( -type f -o -type l \) -print0; \
	fi | tar --null -T - -cf - | tar -xf - -C $$stage; \
	echo "deb: building nbd-serverd $$v in $$stage"; \
	(cd $$stage && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
	    -u MAKEOVERRIDES -u BUILD -u SANITIZE \
	    dpkg-buildpackage -us -uc -b -Jauto) >$(DEB_DIR)/build.log 2>&1 || \
	    { tail -n 40 $(DEB_DIR)/build.log; \
	      echo "deb: dpkg-buildpackage failed, log in $(DEB_DIR)/build.log"; \
	      exit 1; }; \
	mv $(DEB_DIR)/stage/*.deb $(DEB_DIR)/stage/*.buildinfo \
	    $(DEB_DIR)/stage/*.changes $(DEB_DIR)/; \
	ls -1 $(DEB_DIR)/*.deb

# Builds the packages, runs lintian, installs them on this machine,
# serves an image with the installed daemon and purges them again,
# checking that nothing is left behind (tests/deb/check-deb.sh).  Root.
check-deb:
	@tests/deb/check-deb.sh

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

check-format:
	clang-format --dry-run --Werror $(FORMAT_FILES)

# Spelling of code, comments, tests and documents (settings: .codespellrc).
check-spelling:
	codespell src include tests man docs conf systemd bench debian \
	    bash-completion README.md SECURITY.md Makefile .ci

# ---- libFuzzer targets ----
# Each tests/fuzz/fuzz-NAME.c holds one LLVMFuzzerTestOneInput over the
# codec, the URI parser, the configuration parser, the control socket's
# request parser, or a whole server
# connection in process (fuzz-server-conn: the input plays the client
# against the real negotiate and transmit code), or the client library
# against a scripted server (fuzz-client-conn).  They build with
# clang, libFuzzer, ASan and UBSan against a copy of the library compiled
# the same way in build-fuzz/, and are no part of `all` or `check`, which
# must not need clang (`make fuzz-deps` installs it).  `make fuzz` runs
# every target for FUZZ_TIME seconds from the seeds in
# tests/fuzz/corpus/NAME/ (tests/fuzz/make-seeds.py writes them) and
# with tests/fuzz/NAME.dict if there is one, keeping the inputs it finds in
# build-fuzz/corpus/NAME/; a crash, leak, UBSan report or round-trip
# mismatch ends that target, is saved as build-fuzz/crash-NAME-*, and
# fails `make fuzz` once the other targets have had their turn.  `make
# fuzz-regress` replays the seed corpora only, in seconds.  A crashing
# input fixed in src/ belongs in the seed corpus and in a unit test.
FUZZ_CC ?= clang
FUZZ_BUILD := build-fuzz
FUZZ_TIME ?= 60
# Per-input limit: a connection that hangs is a finding.
FUZZ_TIMEOUT ?= 10
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz-*.c)
FUZZ_NAMES := $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRCS))
FUZZ_BINS := $(addprefix $(FUZZ_BUILD)/,$(FUZZ_NAMES))
FUZZ_LIB := $(FUZZ_BUILD)/libnbdsrv.a
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Iinclude $(WARN) -O1 -g \
               -fno-omit-frame-pointer -fno-strict-aliasing -pthread \
               $(PKG_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
               -DNBDSRV_SANITIZE
# -max_len per target: a little above the largest frame worth mutating.
FUZZ_MAX_LEN_fuzz-proto-request := 64
FUZZ_MAX_LEN_fuzz-proto-handshake := 8192
FUZZ_MAX_LEN_fuzz-proto-reply := 8192
FUZZ_MAX_LEN_fuzz-client-uri := 8192
FUZZ_MAX_LEN_fuzz-config := 16384
FUZZ_MAX_LEN_fuzz-server-conn := 16384
FUZZ_MAX_LEN_fuzz-client-conn := 16384
# One control request line, a little over CONTROL_MAX_LINE.
FUZZ_MAX_LEN_fuzz-control-request := 66000
fuzz_max_len = $(or $(FUZZ_MAX_LEN_$(1)),4096)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FUZZ_BUILD)/src/coro/coro-switch.o: FUZZ_CFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=0

$(FUZZ_LIB): $(LIB_SRCS:%.c=$(FUZZ_BUILD)/%.o)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz-%: $(FUZZ_BUILD)/tests/fuzz/fuzz-%.o $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ $(LIBS)

fuzz: $(FUZZ_BINS)
	@failed=""; $(foreach t,$(FUZZ_NAMES),\
	    echo "== $(t): $(FUZZ_TIME) s, max_len $(call fuzz_max_len,$(t))"; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$(t); \
	    $(FUZZ_BUILD)/$(t) -max_total_time=$(FUZZ_TIME) \
	        -max_len=$(call fuzz_max_len,$(t)) -timeout=$(FUZZ_TIMEOUT) \
	        -print_final_stats=1 \
	        $(if $(wildcard tests/fuzz/$(t).dict),-dict=tests/fuzz/$(t).dict) \
	        -artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
	        $(FUZZ_BUILD)/corpus/$(t) tests/fuzz/corpus/$(t) || \
	        failed="$$failed $(t)";) \
	[ -z "$$failed" ] || { echo "fuzz: failed:$$failed"; exit 1; }

fuzz-regress: $(FUZZ_BINS)
	@failed=""; $(foreach t,$(FUZZ_NAMES),\
	    echo "== $(t): seed corpus"; \
	    $(FUZZ_BUILD)/$(t) -runs=0 -timeout=$(FUZZ_TIMEOUT) \
	        -artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
	        tests/fuzz/corpus/$(t) || failed="$$failed $(t)";) \
	[ -z "$$failed" ] || { echo "fuzz-regress: failed:$$failed"; exit 1; }

# CI's share: the seed corpora of every target, then FUZZ_CI_RUNS fresh
# inputs (a fixed seed, so a finding reproduces) of each connection
# target, the ones whose state machines a short run still explores, and
# of the control socket's request parser.
FUZZ_CI_RUNS ?= 100000
FUZZ_CI_NAMES := fuzz-server-conn fuzz-client-conn fuzz-control-request
fuzz-ci: fuzz-regress
	@failed=""; $(foreach t,$(FUZZ_CI_NAMES),\
	    echo "== $(t): $(FUZZ_CI_RUNS) runs"; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$(t); \
	    $(FUZZ_BUILD)/$(t) -runs=$(FUZZ_CI_RUNS) -seed=1 \
	        -max_len=$(call fuzz_max_len,$(t)) -timeout=$(FUZZ_TIMEOUT) \
	        -print_final_stats=1 -dict=tests/fuzz/$(t).dict \
	        -artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
	        $(FUZZ_BUILD)/corpus/$(t) tests/fuzz/corpus/$(t) || \
	        failed="$$failed $(t)";) \
	[ -z "$$failed" ] || { echo "fuzz-ci: failed:$$failed"; exit 1; }

clean:
	rm -rf build build-asan build-tsan build-valgrind build-analyze \
	    build-clang build-clang-asan build-clang-tsan build-clang-valgrind \
	    $(FUZZ_BUILD)

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

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

ifeq ($(SANITIZE),)
  BUILD ?= build
else ifeq ($(SANITIZE),address,undefined)
  BUILD ?= build-asan
else ifeq ($(SANITIZE),thread)
  BUILD ?= build-tsan
else
  $(error SANITIZE must be empty, address,undefined or thread)
endif

PKGS := liburing gnutls inih
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wvla -Wformat=2 -Wstrict-prototypes \
        -Wmissing-prototypes -Wimplicit-fallthrough -Wundef
ifeq ($(WERROR),1)
  WARN += -Werror
endif

OPT ?= -O2 -g
CFLAGS ?= $(OPT)
ALL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Iinclude $(WARN) $(CFLAGS) \
              -fno-strict-aliasing -pthread $(PKG_CFLAGS)
ALL_LDFLAGS := -pthread $(LDFLAGS)
ifneq ($(SANITIZE),)
  ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -O1 \
                -DNBDSRV_SANITIZE
  ALL_LDFLAGS += -fsanitize=$(SANITIZE)
endif
LIBS := $(PKG_LIBS)

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

DEB_BUILD := build-essential pkg-config liburing-dev libgnutls28-dev check \
             libinih-dev
DEB_TEST := gnutls-bin nbdkit qemu-utils nbd-server libnbd-bin \
            python3-libnbd fio systemd groff-base man-db
DEB_PKGS := $(DEB_BUILD) $(DEB_TEST)
# Only for the libFuzzer targets: clang, and the runtime that links
# -fsanitize=fuzzer (merely recommended by clang's packages).
DEB_FUZZ := clang libclang-rt-14-dev

.SECONDARY:

.PHONY: all check check-unit check-interop check-asan check-tsan bench \
        bench-threads bench-client bench-runtime deps fuzz-deps clean format \
        check-format serve install fuzz fuzz-regress

# Installation directories; DESTDIR is prepended to each.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system

all: $(LIB) $(PROGS) $(UNIT_BINS) $(BENCH_BINS)

$(BUILD)/%.o: %.c
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
$(BUILD)/$(patsubst %-main.c,%,$(notdir $(1))): $(BUILD)/$(1:.c=.o) $(LIB)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$^ $$(LIBS)
endef
$(foreach s,$(PROG_SRCS),$(eval $(call program_rule,$(s))))

$(BUILD)/tests/unit/test-%: $(BUILD)/tests/unit/test-%.o $(FIXTURE_OBJS) $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LIBS)

$(BUILD)/tests/unit/%.o: ALL_CFLAGS += $(CHECK_CFLAGS)

$(BUILD)/tests/bench/bench-%: $(BUILD)/tests/bench/bench-%.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

check: check-unit check-interop

check-unit: $(UNIT_BINS)
	@tests/run-unit.sh $(UNIT_BINS)

check-interop: all
	@tests/run-interop.sh $(BUILD)

check-asan:
	$(MAKE) check-unit SANITIZE=address,undefined

check-tsan:
	$(MAKE) check-unit SANITIZE=thread

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

bench-threads: all
	bench/bench-threads.sh $(BUILD)

bench-client: all
	bench/bench-client.sh $(BUILD)

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

# The daemon goes to sbin, other programs to bin.  The configuration
# example is installed as nbd-serverd.conf.example, and as
# nbd-serverd.conf unless one exists; the units get the real paths.
install: $(PROGS)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(SYSCONFDIR)/nbd-serverd $(DESTDIR)$(UNITDIR)
	install -m 755 $(BUILD)/nbd-serverd $(DESTDIR)$(SBINDIR)/nbd-serverd
	for p in $(filter-out $(BUILD)/nbd-serverd,$(PROGS)); do \
	    install -m 755 $$p $(DESTDIR)$(BINDIR)/; done
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
	for u in nbd-serverd.service nbd-serverd.socket; do \
	    sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' \
	        -e 's|/etc/nbd-serverd/|$(SYSCONFDIR)/nbd-serverd/|g' \
	        systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && \
	    chmod 644 $(DESTDIR)$(UNITDIR)/$$u; done

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

check-format:
	clang-format --dry-run --Werror $(FORMAT_FILES)

# ---- libFuzzer targets ----
# Each tests/fuzz/fuzz-NAME.c holds one LLVMFuzzerTestOneInput over the
# codec, the URI parser or the configuration parser.  They build with
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
	        -max_len=$(call fuzz_max_len,$(t)) -print_final_stats=1 \
	        $(if $(wildcard tests/fuzz/$(t).dict),-dict=tests/fuzz/$(t).dict) \
	        -artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
	        $(FUZZ_BUILD)/corpus/$(t) tests/fuzz/corpus/$(t) || \
	        failed="$$failed $(t)";) \
	[ -z "$$failed" ] || { echo "fuzz: failed:$$failed"; exit 1; }

fuzz-regress: $(FUZZ_BINS)
	@failed=""; $(foreach t,$(FUZZ_NAMES),\
	    echo "== $(t): seed corpus"; \
	    $(FUZZ_BUILD)/$(t) -runs=0 -artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
	        tests/fuzz/corpus/$(t) || failed="$$failed $(t)";) \
	[ -z "$$failed" ] || { echo "fuzz-regress: failed:$$failed"; exit 1; }

clean:
	rm -rf build build-asan build-tsan $(FUZZ_BUILD)

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

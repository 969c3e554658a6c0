# ucow — copy-on-write virtual disks served through ublk.
# `make` builds everything; `make check` runs every test; `make demo` shows the product.

CC       ?= gcc
BUILD    ?= build
CFLAGS   ?= -O2 -g
SANITIZE ?=
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation -Wshadow -Wmissing-prototypes
CPPFLAGS += -D_GNU_SOURCE -Icowcore -Iublk -Itools
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) $(SANITIZE) -MMD -MP -pthread -fno-strict-aliasing
LDLIBS   := -luring -laio -lz -lzstd -lnbd -ljson-c -lpthread
V ?= 0
ifeq ($(V),0)
Q := @
endif

COWCORE_SRC := $(wildcard cowcore/*.c)
UBLK_SRC    := $(wildcard ublk/*.c)
TOOLS_SRC   := $(wildcard tools/*.c)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
# TSan: the unit tests that run threads (the others gain nothing from it and run 5-30x
# slower; test_ublk_sock has threads but links ublk/queue.c, whose atomic_thread_fence TSan
# does not support)
TSAN_SRC    := $(shell grep -l pthread_create tests/unit/test_*.c | grep -v test_ublk_)

COWCORE_OBJ := $(COWCORE_SRC:%.c=$(BUILD)/%.o)
UBLK_OBJ    := $(UBLK_SRC:%.c=$(BUILD)/%.o)
TOOLS_OBJ   := $(TOOLS_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# The version: one source, tools/util.h. The build's `git describe` is baked into ucow
# (build/version.h, rewritten only when it changes); outside a git tree it says so.
VERSION     := $(shell sed -n 's/^\#define UCOW_VERSION_STR "\(.*\)"/\1/p' tools/util.h)
GIT_DESCRIBE = $(shell git describe --always --dirty --tags 2>/dev/null || echo "not built from git")

.PHONY: all deps check demo bench bench-big bench-vm clean unit-check cli-check asan-check tsan-check vm-check vm-shell \
	mutation-check fuzz fuzz-build fuzz-long crash-long
all: $(BUILD)/ucow $(UNIT_BIN) $(BUILD)/libcowcore.so.1 $(BUILD)/tests/so_read \
	$(BUILD)/nbdkit-ucow-plugin.so

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  CC      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

.PHONY: FORCE
$(BUILD)/version.h: FORCE
	@mkdir -p $(BUILD)
	@echo '#define UCOW_GIT_DESCRIBE "$(subst ",,$(GIT_DESCRIBE))"' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
$(BUILD)/tools/ucow.o: $(BUILD)/version.h
$(BUILD)/tools/ucow.o: CPPFLAGS += -I$(BUILD)

$(BUILD)/libcowcore.a: $(COWCORE_OBJ)
	$(Q)rm -f $@; ar rcs $@ $^

# The shared library: the same sources built position-independent, only the functions of
# cowcore.h exported (cowcore/libcowcore.map), soname libcowcore.so.1. ucow links the static one.
COWCORE_PIC := $(COWCORE_SRC:%.c=$(BUILD)/pic/%.o)
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  CC      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -c -o $@ $<

$(BUILD)/libcowcore.so.1: $(COWCORE_PIC) cowcore/libcowcore.map
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libcowcore.so.1 \
		-Wl,--version-script=cowcore/libcowcore.map -Wl,-z,defs $(LDFLAGS) -o $@ $(COWCORE_PIC) \
		-luring -laio -lz -lzstd -lnbd -lpthread
	$(Q)ln -sf libcowcore.so.1 $(BUILD)/libcowcore.so

# A program that knows only the public header and the shared library (tests/so/run.sh).
$(BUILD)/tests/so_read: tests/so/so_read.c cowcore/cowcore.h $(BUILD)/libcowcore.so.1
	@mkdir -p $(BUILD)/tests $(BUILD)/so-include
	$(Q)cp cowcore/cowcore.h $(BUILD)/so-include/
	$(Q)$(CC) -std=gnu11 $(WARN) $(CFLAGS) $(SANITIZE) -I$(BUILD)/so-include -o $@ $< \
		$(BUILD)/libcowcore.so.1 -Wl,-rpath,'$$ORIGIN/..'

# The nbdkit plugin (tools/nbdkit/): the engine linked in (position-independent objects), only
# nbdkit's entry point exported (the nbdkit_* functions come from nbdkit itself: no -z defs).
# `nbdkit $(BUILD)/nbdkit-ucow-plugin.so IMAGE`.
$(BUILD)/nbdkit-ucow-plugin.so: tools/nbdkit/nbdkit-ucow-plugin.c tools/nbdkit/plugin.map \
		$(COWCORE_PIC) cowcore/cowcore.h
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -shared -DUCOW_PLUGIN_VERSION='"$(VERSION)"' \
		-Wl,--version-script=tools/nbdkit/plugin.map $(LDFLAGS) -o $@ $< \
		$(COWCORE_PIC) -luring -laio -lz -lzstd -lnbd -lpthread

$(BUILD)/libublk.a: $(UBLK_OBJ)
	$(Q)rm -f $@; ar rcs $@ $^

$(BUILD)/ucow: $(TOOLS_OBJ) $(BUILD)/libublk.a $(BUILD)/libcowcore.a
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcowcore.a
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libcowcore.a -lcmocka $(LDLIBS)

# tests/unit/test_tools_*.c test the command-line tools' helpers: they also link those objects
TOOLS_TEST_OBJ := $(BUILD)/tools/util.o $(BUILD)/tools/json_out.o
$(BUILD)/tests/test_tools_%: tests/unit/test_tools_%.c $(TOOLS_TEST_OBJ) $(BUILD)/libublk.a $(BUILD)/libcowcore.a
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< $(TOOLS_TEST_OBJ) $(BUILD)/libublk.a $(BUILD)/libcowcore.a -lcmocka $(LDLIBS)

# ublk's unit tests link libublk.a too
$(filter $(BUILD)/tests/test_ublk_%,$(UNIT_BIN)): $(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libublk.a $(BUILD)/libcowcore.a
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libublk.a $(BUILD)/libcowcore.a -lcmocka $(LDLIBS)

deps:
	@scripts/deps.sh

# ---- install ---------------------------------------------------------------------------------
# make install / uninstall [PREFIX=/usr/local] [DESTDIR=] [BINDIR=] [LIBDIR=] [INCLUDEDIR=]
# [MANDIR=] [PKGCONFIGDIR=] [BASHCOMPDIR=] [UNITDIR=] [UDEVDIR=] [DOCDIR=].
# The file list is Documentation/packaging.md's; tests/install/run.sh checks it.
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
DATADIR      ?= $(PREFIX)/share
MANDIR       ?= $(DATADIR)/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
NBDKITPLUGINDIR ?= $(LIBDIR)/nbdkit/plugins
BASHCOMPDIR  ?= $(DATADIR)/bash-completion/completions
DOCDIR       ?= $(DATADIR)/doc/ucow
UNITDIR      ?= $(PREFIX)/lib/systemd/system
UDEVDIR      ?= $(PREFIX)/lib/udev/rules.d
INSTALL      ?= install

MAN_SRC  := Documentation/man/ucow.1.scd Documentation/man/ucow-dev.8.scd
MAN_PAGES := $(BUILD)/man/ucow.1 $(BUILD)/man/ucow-dev.8 $(BUILD)/man/ucow-format.5

.PHONY: man install-files install uninstall deb
man: $(MAN_PAGES)

$(BUILD)/man/%: Documentation/man/%.scd
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  SCDOC   $@"
	$(Q)scdoc <$< >$@.tmp && mv $@.tmp $@

# ucow-format(5) has one source, Documentation/format.md
$(BUILD)/man/ucow-format.5: Documentation/format.md scripts/md2scd.py
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  SCDOC   $@"
	$(Q)scripts/md2scd.py ucow-format 5 "File Formats" <$< >$@.scd
	$(Q)scdoc <$@.scd >$@.tmp && mv $@.tmp $@

$(BUILD)/dist/%: dist/%.in FORCE
	@mkdir -p $(dir $@)
	@sed 's|@BINDIR@|$(BINDIR)|g' $< >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

$(BUILD)/libcowcore.pc: cowcore/libcowcore.pc.in tools/util.h FORCE
	@sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' $< >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

# What install installs, built (and nothing else: the unit tests need cmocka). The Debian
# package's build step (debian/rules) runs it with the same variables as its install.
INSTALL_FILES := $(BUILD)/ucow $(BUILD)/libcowcore.so.1 $(BUILD)/libcowcore.a $(BUILD)/libcowcore.pc \
		$(MAN_PAGES) $(BUILD)/dist/systemd/ucow@.service $(BUILD)/dist/udev/60-ucow.rules \
		$(BUILD)/nbdkit-ucow-plugin.so
install-files: $(INSTALL_FILES)

install: $(INSTALL_FILES)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(UDEVDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(NBDKITPLUGINDIR)
	$(INSTALL) -m 755 $(BUILD)/ucow $(DESTDIR)$(BINDIR)/ucow
	$(INSTALL) -m 644 $(BUILD)/nbdkit-ucow-plugin.so \
		$(DESTDIR)$(NBDKITPLUGINDIR)/nbdkit-ucow-plugin.so
	$(INSTALL) -m 644 $(BUILD)/libcowcore.so.1 $(DESTDIR)$(LIBDIR)/libcowcore.so.1
	ln -sf libcowcore.so.1 $(DESTDIR)$(LIBDIR)/libcowcore.so
	$(INSTALL) -m 644 $(BUILD)/libcowcore.a $(DESTDIR)$(LIBDIR)/libcowcore.a
	$(INSTALL) -m 644 cowcore/cowcore.h $(DESTDIR)$(INCLUDEDIR)/cowcore.h
	$(INSTALL) -m 644 $(BUILD)/libcowcore.pc $(DESTDIR)$(PKGCONFIGDIR)/libcowcore.pc
	$(INSTALL) -m 644 $(BUILD)/man/ucow.1 $(DESTDIR)$(MANDIR)/man1/ucow.1
	$(INSTALL) -m 644 $(BUILD)/man/ucow-format.5 $(DESTDIR)$(MANDIR)/man5/ucow-format.5
	$(INSTALL) -m 644 $(BUILD)/man/ucow-dev.8 $(DESTDIR)$(MANDIR)/man8/ucow-dev.8
	$(INSTALL) -m 644 dist/bash-completion/ucow $(DESTDIR)$(BASHCOMPDIR)/ucow
	$(INSTALL) -m 644 $(BUILD)/dist/systemd/ucow@.service $(DESTDIR)$(UNITDIR)/ucow@.service
	$(INSTALL) -m 644 $(BUILD)/dist/udev/60-ucow.rules $(DESTDIR)$(UDEVDIR)/60-ucow.rules
	$(INSTALL) -m 644 dist/ucow-example.conf $(DESTDIR)$(DOCDIR)/ucow-example.conf

# Removes exactly what install put there, then the folders it leaves empty (never others').
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ucow $(DESTDIR)$(LIBDIR)/libcowcore.so.1 \
		$(DESTDIR)$(LIBDIR)/libcowcore.so $(DESTDIR)$(LIBDIR)/libcowcore.a \
		$(DESTDIR)$(INCLUDEDIR)/cowcore.h $(DESTDIR)$(PKGCONFIGDIR)/libcowcore.pc \
		$(DESTDIR)$(MANDIR)/man1/ucow.1 $(DESTDIR)$(MANDIR)/man5/ucow-format.5 \
		$(DESTDIR)$(MANDIR)/man8/ucow-dev.8 $(DESTDIR)$(BASHCOMPDIR)/ucow \
		$(DESTDIR)$(UNITDIR)/ucow@.service $(DESTDIR)$(UDEVDIR)/60-ucow.rules \
		$(DESTDIR)$(DOCDIR)/ucow-example.conf \
		$(DESTDIR)$(NBDKITPLUGINDIR)/nbdkit-ucow-plugin.so
	rmdir -p --ignore-fail-on-non-empty $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(NBDKITPLUGINDIR) \
		$(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(UDEVDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null || :

# The Debian packages (debhelper, debian/): ucow, libcowcore1, libcowcore-dev in $(BUILD)/deb,
# built from a scratch copy of the tree (scripts/deb.sh; Documentation/packaging.md).
deb:
	@UCOW_VERSION='$(VERSION)' UCOW_DESCRIBE='$(subst ',,$(GIT_DESCRIBE))' scripts/deb.sh $(BUILD)

# Every test: unit, command line, sanitizer build, real-kernel test bed. Ends with
# "N passed, N failed" and exits non-zero on any failure.
check: deps
	@tests/run-all.sh

unit-check: all
	@tests/run-unit.sh $(BUILD)

cli-check: all
	@tests/cli/run.sh $(BUILD)

# Sanitizer build (ASan + UBSan) in its own folder; unit and cli tests run against it.
asan-check:
	@$(MAKE) --no-print-directory BUILD=build/asan CFLAGS="-O1 -g" \
		SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all
	@UCOW_CRASH_STATES=$${UCOW_CRASH_STATES:-1500} tests/run-unit.sh build/asan asan-unit; a=$$?; \
	 CLI_SHORT=1 CLI_TIMEOUT=450 tests/cli/run.sh build/asan >build/asan/cli.out 2>&1; c=$$?; \
	 sed 's#^\(PASS\|FAIL\) cli/#\1 asan-cli/#' build/asan/cli.out; [ $$a -eq 0 ] && [ $$c -eq 0 ]

# ThreadSanitizer build of the engine's unit tests (the concurrency paths).
tsan-check:
	@$(MAKE) --no-print-directory BUILD=build/tsan CFLAGS="-O1 -g" SANITIZE="-fsanitize=thread" \
		$(TSAN_SRC:tests/unit/%.c=build/tsan/tests/%)
	@TSAN_OPTIONS=halt_on_error=1 tests/run-unit.sh build/tsan tsan $(TSAN_SRC)

# Plant each bug of tests/mutations/*.mut in a scratch copy, build, run the unit and CLI
# tests: fails if any mutation survives or no longer applies. Not part of check (it is long).
mutation-check: deps
	@tests/mutations/run.py

# The power-loss simulator's long sweep: a million crash images (hours), a fresh seed (printed;
# UCOW_CRASH_SEED=N replays a run). UCOW_CRASH_STATES=N sets another count.
crash-long: $(BUILD)/tests/test_crash
	UCOW_CRASH_STATES=$${UCOW_CRASH_STATES:-1000000} $(BUILD)/tests/test_crash

demo: deps all
	@scripts/demo.sh

bench: deps all
	@tests/bench/run.sh

# S12 and S5b (Documentation/performance.md): first writes into empty 4 GiB, 64 GiB and
# 1 TiB images, and snapshot operations on the 1 TiB one; one run, about 10 minutes.
bench-big: deps all
	@tests/bench/run.sh --only S12

# S9 (Documentation/performance.md): ucow's cow target against qemu-nbd, qemu-storage-daemon
# (VDUSE) and dm-thin in the test bed, same fio jobs; RUNS=3 RUNTIME=5 by default.
bench-vm: deps all
	@tests/bench/peers.py

# libFuzzer targets (tests/fuzz, Documentation/reliability.md "Fuzzing"): cowcore compiled
# again with clang, ASan, UBSan and the fuzzer's coverage, in $(BUILD)/fuzz/obj (the gcc
# build is untouched). `make fuzz` replays tests/fuzz/regressions, makes seeds with ucow and
# runs each target FUZZ_TIME seconds; `make fuzz-long` runs each 10 minutes.
FUZZ_CC      ?= clang
FUZZ_TIME    ?= 18
FUZZ_DIR     := $(BUILD)/fuzz
# (clang 14 does not know -Wno-format-truncation, and -Werror turns that into an error)
FUZZ_CFLAGS  := -std=gnu11 $(filter-out -Wno-format-truncation,$(WARN)) -O1 -g \
		-fno-omit-frame-pointer -fno-strict-aliasing -pthread -MMD -MP \
		-fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_NAMES   := $(filter-out util,$(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_COWOBJ  := $(COWCORE_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_OBJ     := $(FUZZ_COWOBJ) $(FUZZ_NAMES:%=$(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o) \
		$(FUZZ_DIR)/obj/tests/fuzz/fuzz_util.o

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  FUZZCC  $@"
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_DIR)/libcowcore.a: $(FUZZ_COWOBJ)
	$(Q)rm -f $@; ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_DIR)/obj/tests/fuzz/fuzz_util.o \
		$(FUZZ_DIR)/libcowcore.a
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ -luring -laio -lz -lzstd -lnbd -lpthread

# The seeds ucow cannot make (dirty images, side logs): built with gcc on libcowcore.a.
$(FUZZ_DIR)/mkseed: tests/fuzz/mkseed.c tests/fuzz/fuzz_util.c tests/fuzz/fuzz_util.h \
		$(BUILD)/libcowcore.a
	@mkdir -p $(dir $@)
	@[ "$(V)" != 0 ] || echo "  LD      $@"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -o $@ tests/fuzz/mkseed.c tests/fuzz/fuzz_util.c \
		$(BUILD)/libcowcore.a $(LDLIBS)

.SECONDARY: $(FUZZ_OBJ)
fuzz-build: $(FUZZ_BIN) $(FUZZ_DIR)/mkseed $(BUILD)/ucow

fuzz: fuzz-build
	@tests/fuzz/run.sh $(BUILD) $(FUZZ_TIME)

fuzz-long: fuzz-build
	@tests/fuzz/run.sh $(BUILD) 600

clean:
	rm -rf $(BUILD)

-include tests/vm/vm.mk
-include $(COWCORE_OBJ:.o=.d) $(COWCORE_PIC:.o=.d) $(FUZZ_OBJ:.o=.d) $(UBLK_OBJ:.o=.d) $(TOOLS_OBJ:.o=.d) $(UNIT_BIN:=.d)

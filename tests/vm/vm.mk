# The real-kernel test bed (tests/vm/, Documentation/testbed.md); included by the Makefile.
#
#   make vm-check [VM_ARGS="--only REGEX ..."]   build, then run the guest tests (PASS/FAIL lines)
#   make vm-shell [VM_ARGS=...]                   the same guest, with a shell on the console
#   make vm-kernel                                fetch/unpack the guest kernel (cached)
#   make vm-clean                                 forget the built initramfs and logs
#
# tests/vm/run.sh does the work and can be called directly (it does not build ucow).
VM_ARGS ?=

.PHONY: vm-kernel vm-clean

# Host-built helpers the guest tests run (run.sh puts them in the guest's PATH).
VM_BINS := $(BUILD)/vm-bin/replay-log
all: $(VM_BINS)
$(BUILD)/vm-bin/%: tests/vm/%.c
	@mkdir -p $(BUILD)/vm-bin
	$(Q)$(CC) $(CPPFLAGS) -std=gnu11 $(WARN) $(CFLAGS) -o $@ $<

vm-check: all
	@BUILD=$(BUILD) tests/vm/run.sh $(VM_ARGS)

# A shell is for debugging: a broken build elsewhere (a unit test...) must not prevent it.
vm-shell:
	@$(MAKE) --no-print-directory $(BUILD)/ucow $(VM_BINS) || \
		echo "vm-shell: building ucow failed; the guest gets the last one built, if any" >&2
	@BUILD=$(BUILD) tests/vm/run.sh --shell $(VM_ARGS)

vm-kernel:
	@tests/vm/kernel.sh >/dev/null

vm-clean:
	rm -rf $(BUILD)/vm

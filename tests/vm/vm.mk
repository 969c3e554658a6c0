# The real-kernel test bed (tests/vm/, Documentation/testbed.md); included by the Makefile.
#
#   make vm-check [VM_ARGS="--only REGEX ..."]   build, then run the guest tests (PASS/FAIL lines)
#                                                 on the 6.12 kernel (all, in VM_SHARDS guests
#                                                 side by side), then on a newer one
#                                                 (6.16+, run.sh --kernel new) those that prove
#                                                 what only newer drivers do, and a smoke set
#                                                 (VM_NEW_ARGS; VM_KERNELS="6.12" skips it)
#   make vm-kvm-check                             the long guest tests ("# vm-long:", left out of
#                                                 vm-check): 64-qemu-guest, a QEMU guest booted
#                                                 on a ucow device (minutes: nested TCG); make
#                                                 check runs it only with UCOW_LONG=1
#   make vm-shell [VM_ARGS=...]                   the same guest, with a shell on the console
#   make vm-kernel                                fetch/unpack the guest kernel (cached)
#   make vm-clean                                 forget the built initramfs and logs
#
# tests/vm/run.sh does the work and can be called directly (it does not build ucow).
VM_ARGS ?=
VM_KERNELS ?= 6.12 new
# on the newer kernel: the driver, recovery under fio verify, the 6.1 path, online
# apply, and the online resize that needs UBLK_F_UPDATE_SIZE (all passed there: testbed.md)
VM_NEW_ARGS ?= --only '^(00|40|46|56|63)-'

.PHONY: vm-kernel vm-clean vm-kvm-check

# Host-built helpers the guest tests run (run.sh puts them in the guest's PATH).
VM_BINS := $(BUILD)/vm-bin/replay-log
all: $(VM_BINS)
$(BUILD)/vm-bin/%: tests/vm/%.c
	@mkdir -p $(BUILD)/vm-bin
	$(Q)$(CC) $(CPPFLAGS) -std=gnu11 $(WARN) $(CFLAGS) -o $@ $<

# VM_SHARDS guests run the 6.12 tests side by side (TCG runs a guest on one host core: two
# guests on two cores take half the time), their lines printed one guest after the other.
VM_SHARDS ?= 2
# the newer kernel's run follows share 1 (in the same background job): its seconds count
# as share 1's when the tests are dealt out
VM_NEW_PRELOAD ?= 1:120
vm-check: all
	@rc=0; for k in $(VM_KERNELS); do \
		if [ $$k = 6.12 ] && [ $(VM_SHARDS) -gt 1 ]; then \
			pids=""; for i in $$(seq 0 $$(($(VM_SHARDS) - 1))); do \
				{ UCOW_VM_SHARD_PRELOAD="$(VM_NEW_PRELOAD)" BUILD=$(BUILD) \
					tests/vm/run.sh --shard $$i/$(VM_SHARDS) $(VM_ARGS); \
				  echo "rc=$$?"; \
				  if [ $$i = 1 ] && [ "$(filter new,$(VM_KERNELS))" ]; then \
					BUILD=$(BUILD) tests/vm/run.sh --kernel new $(VM_NEW_ARGS); \
					echo "rc=$$?"; fi; \
				} >$(BUILD)/vm-shard$$i.out 2>&1 & pids="$$pids $$!"; \
			done; \
			for p in $$pids; do wait $$p; done; \
			for i in $$(seq 0 $$(($(VM_SHARDS) - 1))); do \
				grep -v '^rc=' $(BUILD)/vm-shard$$i.out; \
				grep -qx 'rc=[1-9][0-9]*' $(BUILD)/vm-shard$$i.out && rc=1; \
			done; \
		elif [ $$k = 6.12 ]; then BUILD=$(BUILD) tests/vm/run.sh $(VM_ARGS) || rc=1; \
		elif [ $(VM_SHARDS) -le 1 ] || [ -z "$(filter 6.12,$(VM_KERNELS))" ]; then \
			BUILD=$(BUILD) tests/vm/run.sh --kernel $$k $(VM_NEW_ARGS) || rc=1; fi; \
	done; exit $$rc

vm-kvm-check: all
	@BUILD=$(BUILD) tests/vm/run.sh --long

# A shell is for debugging: a broken build elsewhere (a unit test...) must not prevent it.
vm-shell:
	@$(MAKE) --no-print-directory $(BUILD)/ucow $(VM_BINS) || \
		echo "vm-shell: building ucow failed; the guest gets the last one built, if any" >&2
	@BUILD=$(BUILD) tests/vm/run.sh --shell $(VM_ARGS)

vm-kernel:
	@for k in $(VM_KERNELS); do tests/vm/kernel.sh --series $$k >/dev/null || exit 1; done

vm-clean:
	rm -rf $(BUILD)/vm $(BUILD)/vm-new $(BUILD)/vm-s[0-9]*

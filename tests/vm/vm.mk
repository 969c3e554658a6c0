# The real-kernel test bed (tests/vm/, Documentation/testbed.md); included by the Makefile.
#
#   make vm-check [VM_ARGS="--only REGEX ..."]   run the guest tests (PASS/FAIL lines)
#   make vm-shell [VM_ARGS=...]                   the same guest, with a shell on the console
#   make vm-kernel                                fetch/unpack the guest kernel (cached)
#   make vm-clean                                 forget the built initramfs and logs
#
# tests/vm/run.sh does the work and can be called directly (it does not build ucow).
VM_ARGS ?=

.PHONY: vm-kernel vm-clean

vm-check: all
	@BUILD=$(BUILD) tests/vm/run.sh $(VM_ARGS)

vm-shell: all
	@BUILD=$(BUILD) tests/vm/run.sh --shell $(VM_ARGS)

vm-kernel:
	@tests/vm/kernel.sh >/dev/null

vm-clean:
	rm -rf $(BUILD)/vm

/* SPDX-License-Identifier: MIT */
/*
 * Benchmark baseline init: reboot at once, so a run measures kernel boot to init and QEMU's
 * exit, nothing else. With acpi=off there is no power-off; reboot=t on the cmdline makes the
 * reboot a triple fault and QEMU's -no-reboot turns that into an immediate exit.
 */
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
	reboot(RB_AUTOBOOT);
	/* PID 1 must never return (the kernel would panic): wait if reboot ever fails. */
	for (;;)
		pause();
}

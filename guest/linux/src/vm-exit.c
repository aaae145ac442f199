/*
 * vm-exit CODE
 *
 * Stops the VM: writes CODE to the debug-exit port 0xf4 (vmc run exits with CODE; QEMU's
 * isa-debug-exit with (CODE << 1) | 1). ioperm() grants this process the one port.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/io.h>

int main(int argc, char **argv)
{
	int code = argc > 1 ? atoi(argv[1]) : 0;
	if (ioperm(0xf4, 1, 1) < 0) {
		fprintf(stderr, "vm-exit: ioperm: %s\n", strerror(errno));
		return 1;
	}
	fflush(stdout);
	outb(code, 0xf4);
	/* Only reached if nothing listens on the port. */
	fprintf(stderr, "vm-exit: port 0xf4 did not stop the VM\n");
	return 1;
}

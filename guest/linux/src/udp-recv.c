/*
 * udp-recv PORT COUNT TIMEOUT_S
 *
 * Binds 0.0.0.0:PORT, prints `linux: rx ready` (the sender may start), then receives
 * until COUNT datagrams arrived or nothing came for TIMEOUT_S seconds. Checks each
 * payload against the sender's stream (byte i is i % 251), taking datagrams in order,
 * and prints `linux: rx N datagrams, B bytes, sizes S..., payload ok|bad at D`.
 * Exits 0 only when COUNT datagrams arrived with the right payload.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: udp-recv PORT COUNT TIMEOUT_S\n");
		return 2;
	}
	int count = atoi(argv[2]);
	struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
		printf("linux: rx error bind: %s\n", strerror(errno));
		return 1;
	}
	/* Room for a whole 64 KiB burst even if the application is slow to read. */
	int rcvbuf = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct timeval tv = { .tv_sec = atoi(argv[3]) };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	printf("linux: rx ready\n");
	fflush(stdout);

	static unsigned char buf[65536];
	char sizes[4096] = "";
	size_t used = 0, offset = 0;
	int got = 0, bad = -1;
	while (got < count) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0)
			break;
		for (ssize_t i = 0; i < n && bad < 0; i++)
			if (buf[i] != (offset + i) % 251)
				bad = got;
		offset += n;
		if (used < sizeof(sizes) - 16)
			used += snprintf(sizes + used, sizeof(sizes) - used, " %zd", n);
		got++;
	}
	if (bad >= 0)
		printf("linux: rx %d datagrams, %zu bytes, sizes%s, payload bad at %d\n", got, offset, sizes, bad);
	else
		printf("linux: rx %d datagrams, %zu bytes, sizes%s, payload ok\n", got, offset, sizes);
	fflush(stdout);
	return got == count && bad < 0 ? 0 : 1;
}

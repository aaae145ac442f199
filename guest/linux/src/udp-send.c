/*
 * udp-send DST PORT TOTAL GSO_SIZE [SECONDS]
 *
 * Sends TOTAL bytes to DST:PORT. With GSO_SIZE > 0, in ONE sendto() with UDP_SEGMENT:
 * the kernel hands the whole buffer to a device that can segment it (virtio-net with
 * HOST_USO) as one frame, or cuts it into GSO_SIZE datagrams itself. With GSO_SIZE 0,
 * as plain datagrams of 1400 bytes. Byte i of the stream is i % 251, so a receiver can
 * check each datagram from its offset. Prints one `linux: tx ...` line.
 *
 * With SECONDS, sends those TOTAL bytes again and again (one UDP_SEGMENT send, or its
 * plain datagrams, per round) for that long, a throughput load: it prints
 * `linux: tx start`, then `linux: tx N sends, B bytes, gso_size G, in S s`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* TOTAL bytes: one send with UDP_SEGMENT, or datagrams of 1400 bytes. */
static int send_once(int fd, const struct sockaddr_in *dst, const unsigned char *buf, size_t total, int gso,
		     size_t *sends)
{
	for (size_t off = 0; off < total; (*sends)++) {
		size_t len = gso > 0 ? total : (total - off < 1400 ? total - off : 1400);
		ssize_t n = sendto(fd, buf + off, len, 0, (const struct sockaddr *)dst, sizeof(*dst));
		if (n != (ssize_t)len) {
			printf("linux: tx error sendto: %zd, %s\n", n, strerror(errno));
			return -1;
		}
		off += len;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: udp-send DST PORT TOTAL GSO_SIZE [SECONDS]\n");
		return 2;
	}
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "udp-send: bad address %s\n", argv[1]);
		return 2;
	}
	size_t total = strtoul(argv[3], NULL, 0);
	int gso = atoi(argv[4]);
	unsigned char *buf = malloc(total);
	if (!buf)
		return 1;
	for (size_t i = 0; i < total; i++)
		buf[i] = i % 251;

	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		printf("linux: tx error socket: %s\n", strerror(errno));
		return 1;
	}
	if (gso > 0 && setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gso, sizeof(gso)) < 0) {
		printf("linux: tx error UDP_SEGMENT: %s\n", strerror(errno));
		return 1;
	}
	double seconds = argc == 6 ? strtod(argv[5], NULL) : 0;
	if (seconds > 0) {
		printf("linux: tx start\n");
		fflush(stdout);
	}
	double start = now(), elapsed = 0;
	size_t sends = 0, sent = 0;
	do {
		if (send_once(fd, &dst, buf, total, gso, &sends) < 0)
			return 1;
		sent += total;
		elapsed = now() - start;
	} while (elapsed < seconds);
	if (seconds > 0)
		printf("linux: tx %zu sends, %zu bytes, gso_size %d, in %.3f s\n", sends, sent, gso, elapsed);
	else if (gso > 0)
		printf("linux: tx 1 send, %zu bytes, gso_size %d\n", total, gso);
	else
		printf("linux: tx %zu sends, %zu bytes\n", sends, total);
	fflush(stdout);
	close(fd);
	return 0;
}

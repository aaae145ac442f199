/*
 * udp-send DST PORT TOTAL GSO_SIZE
 *
 * Sends TOTAL bytes to DST:PORT. With GSO_SIZE > 0, in ONE sendto() with UDP_SEGMENT:
 * the kernel hands the whole buffer to a device that can segment it (virtio-net with
 * HOST_USO) as one frame, or cuts it into GSO_SIZE datagrams itself. With GSO_SIZE 0,
 * as plain datagrams of 1400 bytes. Byte i of the stream is i % 251, so a receiver can
 * check each datagram from its offset. Prints one `linux: tx ...` line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: udp-send DST PORT TOTAL GSO_SIZE\n");
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
	if (gso > 0) {
		if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gso, sizeof(gso)) < 0) {
			printf("linux: tx error UDP_SEGMENT: %s\n", strerror(errno));
			return 1;
		}
		ssize_t n = sendto(fd, buf, total, 0, (struct sockaddr *)&dst, sizeof(dst));
		if (n != (ssize_t)total) {
			printf("linux: tx error sendto: %zd, %s\n", n, strerror(errno));
			return 1;
		}
		printf("linux: tx 1 send, %zu bytes, gso_size %d\n", total, gso);
	} else {
		size_t sends = 0;
		for (size_t off = 0; off < total; off += 1400, sends++) {
			size_t len = total - off < 1400 ? total - off : 1400;
			if (sendto(fd, buf + off, len, 0, (struct sockaddr *)&dst, sizeof(dst)) != (ssize_t)len) {
				printf("linux: tx error sendto: %s\n", strerror(errno));
				return 1;
			}
		}
		printf("linux: tx %zu sends, %zu bytes\n", sends, total);
	}
	fflush(stdout);
	close(fd);
	return 0;
}

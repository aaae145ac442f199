/*
 * net-feature IFACE NAME on|off
 *
 * Turns one netdev feature on or off by its ethtool name (`tx-udp-segmentation`), as
 * `ethtool -K` does, and prints `linux: IFACE NAME on|off` with the state the kernel then
 * reports. Linux's virtio-net driver offers USO transmit when it negotiated HOST_USO but
 * leaves it off until asked; busybox has no ethtool.
 */
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int ethtool(int fd, const char *iface, void *cmd)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
	ifr.ifr_data = cmd;
	return ioctl(fd, SIOCETHTOOL, &ifr);
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[3], "on") && strcmp(argv[3], "off"))) {
		fprintf(stderr, "usage: net-feature IFACE NAME on|off\n");
		return 2;
	}
	const char *iface = argv[1], *name = argv[2];
	int on = !strcmp(argv[3], "on");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	/* How many feature names, then the names: the bit of NAME is its index. */
	struct {
		struct ethtool_sset_info hdr;
		__u32 len;
	} sset = { .hdr = { .cmd = ETHTOOL_GSSET_INFO, .sset_mask = 1ULL << ETH_SS_FEATURES } };
	if (fd < 0 || ethtool(fd, iface, &sset) < 0 || !sset.hdr.sset_mask) {
		printf("linux: net-feature error: feature count of %s: %s\n", iface, strerror(errno));
		return 1;
	}
	unsigned count = sset.len;
	struct ethtool_gstrings *names = calloc(1, sizeof(*names) + count * ETH_GSTRING_LEN);
	names->cmd = ETHTOOL_GSTRINGS;
	names->string_set = ETH_SS_FEATURES;
	names->len = count;
	if (ethtool(fd, iface, names) < 0) {
		printf("linux: net-feature error: feature names: %s\n", strerror(errno));
		return 1;
	}
	unsigned bit;
	for (bit = 0; bit < count; bit++)
		if (!strncmp((char *)names->data + bit * ETH_GSTRING_LEN, name, ETH_GSTRING_LEN))
			break;
	if (bit == count) {
		printf("linux: net-feature error: %s has no feature %s\n", iface, name);
		return 1;
	}

	unsigned blocks = (count + 31) / 32;
	struct ethtool_sfeatures *set = calloc(1, sizeof(*set) + blocks * sizeof(set->features[0]));
	set->cmd = ETHTOOL_SFEATURES;
	set->size = blocks;
	set->features[bit / 32].valid = 1U << (bit % 32);
	set->features[bit / 32].requested = on ? 1U << (bit % 32) : 0;
	if (ethtool(fd, iface, set) < 0) {
		printf("linux: net-feature error: set %s: %s\n", name, strerror(errno));
		return 1;
	}

	struct ethtool_gfeatures *get = calloc(1, sizeof(*get) + blocks * sizeof(get->features[0]));
	get->cmd = ETHTOOL_GFEATURES;
	get->size = blocks;
	if (ethtool(fd, iface, get) < 0) {
		printf("linux: net-feature error: get features: %s\n", strerror(errno));
		return 1;
	}
	int now = !!(get->features[bit / 32].active & (1U << (bit % 32)));
	printf("linux: %s %s %s\n", iface, name, now ? "on" : "off");
	return now == on ? 0 : 1;
}

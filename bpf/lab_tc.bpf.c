/* The lab's impairments, as a tc ingress classifier (direct action): this
 * kernel has no netem and no gact, but cls_bpf can drop. Not a probe.
 *   -DLOSS_PPM=N         drop N in a million incoming IPv4 packets, at random
 *   -DDROP_UDP_PORT=P    drop incoming UDP to port P (a firewall rule)
 * Everything else: TC_ACT_UNSPEC, so the next filter (another rule) still runs. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/pkt_cls.h>

int lab_filter(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != __constant_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_UNSPEC;
#ifdef LOSS_PPM
	if (bpf_get_prandom_u32() % 1000000 < LOSS_PPM)
		return TC_ACT_SHOT;
#endif
#ifdef DROP_UDP_PORT
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)ip + ip->ihl * 4;
		if ((void *)(udp + 1) <= end && udp->dest == __constant_htons(DROP_UDP_PORT))
			return TC_ACT_SHOT;
	}
#endif
	return TC_ACT_UNSPEC;
}

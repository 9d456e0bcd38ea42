/* netdev: packets and bytes each device sent and received, transmit errors,
 * packets queued to the device, and a packet-size histogram — per device and
 * namespace, counted where the driver is handed the packet (net_dev_xmit) and
 * where the stack takes it (netif_receive_skb), so it matches the device's
 * own statistics. Bytes include the link-layer header, like those do.
 *
 * Hooks: HOOK_RAW_TP (raw tracepoints, skb/device at BTF offsets), HOOK_TP
 * (net:* tracepoints), HOOK_KPROBE (dev_hard_start_xmit/__netif_receive_skb_core:
 * transmit return codes unknown there). */
#include <uapi/linux/ptrace.h>
#include "pyprobe_bpf.h"

struct dev_key {
	u32 netns;
	u32 ifindex;
};

/* Packet sizes: exp2 slots (hist_slot), up to 2^(SIZE_SLOTS-2) = 4 MiB,
 * beyond any sk_buff's length (BIG TCP's GSO packets are 512 KiB at most). */
#define SIZE_SLOTS 24
#define DIR_TX 0
#define DIR_RX 1

/* Everything counted per device, in one value: a packet is one map lookup.
 * The size histogram's sum is the byte counter (pyprobe/probes/netdev.py). */
struct dev_val {
	u64 tx_packets;
	u64 tx_bytes;
	u64 tx_errors; /* driver refused the packet (NETDEV_TX_BUSY or an error) */
	u64 queued;    /* packets handed to the device's queueing (net_dev_queue) */
	u64 rx_packets;
	u64 rx_bytes;
	u64 sizes[2 * SIZE_SLOTS]; /* [dir * SIZE_SLOTS + slot]; bcc reads no 2-D arrays */
};

BPF_TABLE("percpu_hash", struct dev_key, struct dev_val, devices, MAX_devices);
/* A new device's first value is copied from here: 432 zero bytes do not fit
 * on the BPF stack beside receive()'s sk_buff span. */
BPF_ARRAY(zero_dev, struct dev_val, 1);
#ifdef FRONT_devices
/* The devices most packets go through, without the hash (pyprobe_bpf.h). */
_Static_assert(sizeof(struct dev_key) == 8, "a front's key is 8 bytes");
BPF_ARRAY(devices_fkeys, struct dev_key, FRONT_devices + 1);
BPF_PERCPU_ARRAY(devices_front, struct dev_val, FRONT_devices + 1);
#endif

static __always_inline struct dev_val *dev_of(const void *dev, struct dev_key *k)
{
	dev_ids(dev, &k->ifindex, &k->netns);
#ifdef FRONT_devices
	u64 key = front_key(k);
	u32 slot = front_index(key, FRONT_devices);
	struct dev_key *held = devices_fkeys.lookup(&slot);
	if (held && front_claim((u64 *)held, key)) {
		struct dev_val *fv = devices_front.lookup(&slot);
		if (fv)
			return fv;
	}
#endif
	struct dev_val *v = devices.lookup(k);
	if (v)
		return v;
	u32 first = 0;
	struct dev_val *zero = zero_dev.lookup(&first);
	if (!zero)
		return 0;
	devices.insert(k, zero);
	v = devices.lookup(k);
	if (!v)
		map_full(MAP_ID_devices);
	return v;
}

static __always_inline void size(struct dev_val *v, u32 dir, u64 len)
{
	u32 slot = hist_slot(len);
	/* The last slot is where a histogram's sum would go (see hist_slot):
	 * left 0 here, as the byte counters hold the sum. */
	if (slot > SIZE_SLOTS - 2)
		slot = SIZE_SLOTS - 2;
	/* The clamp compiles to a conditional move whose bound 6.1's verifier
	 * loses ("unbounded memory access"): past a barrier clang cannot see
	 * through, a test it cannot drop is the bound every verifier sees. */
	u64 idx = (dir & 1) * SIZE_SLOTS + slot; /* 64-bit: no zero-extended copy */
	asm volatile("" : "+r"(idx));
	if (idx >= 2 * SIZE_SLOTS)
		return;
	v->sizes[idx]++;
}

static __always_inline const void *skb_dev(const void *skb)
{
	const void *dev = 0;
	READ_AT(dev, skb, OFF_SKB_DEV);
	return dev;
}

static __always_inline int xmit(const void *dev, int rc, u64 len)
{
	struct dev_key k = {};
	struct dev_val *v = dev_of(dev, &k);
	if (!v)
		return 0;
	if (rc != 0) {
		v->tx_errors++;
		return 0;
	}
	v->tx_packets++;
	v->tx_bytes += len;
	size(v, DIR_TX, len);
	return 0;
}

static __always_inline int queue(const void *skb)
{
	struct dev_key k = {};
	struct dev_val *v = dev_of(skb_dev(skb), &k);
	if (v)
		v->queued++;
	return 0;
}

/* The sk_buff fields receive() reads, as one span (SPAN_READ). */
#define SKB_LO MIN_(MIN_(OFF_SKB_DEV, OFF_SKB_LEN), MIN_(MIN_(OFF_SKB_MAC_HEADER, OFF_SKB_HEAD), OFF_SKB_DATA))
#define SKB_HI MAX_(MAX_(OFF_SKB_DEV + 8, OFF_SKB_LEN + 4), \
		    MAX_(MAX_(OFF_SKB_MAC_HEADER + 2, OFF_SKB_HEAD + 8), OFF_SKB_DATA + 8))

static __always_inline int receive(const void *skb)
{
	struct dev_key k = {};
	u32 len = 0;
	u16 mac = 0;
	unsigned char *head = 0, *data = 0;
	const void *dev = 0;
	if (SPAN_FITS(SKB_LO, SKB_HI)) {
		char span[SPAN_FITS(SKB_LO, SKB_HI) ? SKB_HI - SKB_LO : 1];
		SPAN_READ(span, skb, SKB_LO, SKB_HI);
		SPAN_GET(dev, span, SKB_LO, OFF_SKB_DEV);
		SPAN_GET(len, span, SKB_LO, OFF_SKB_LEN);
		SPAN_GET(mac, span, SKB_LO, OFF_SKB_MAC_HEADER);
		SPAN_GET(head, span, SKB_LO, OFF_SKB_HEAD);
		SPAN_GET(data, span, SKB_LO, OFF_SKB_DATA);
	} else {
		dev = skb_dev(skb);
		READ_AT(len, skb, OFF_SKB_LEN);
		READ_AT(mac, skb, OFF_SKB_MAC_HEADER);
		READ_AT(head, skb, OFF_SKB_HEAD);
		READ_AT(data, skb, OFF_SKB_DATA);
	}
	/* The link-layer header was pulled already; the device counted it. */
	if (mac != 0xffff && data >= head + mac)
		len += data - (head + mac);
	struct dev_val *v = dev_of(dev, &k);
	if (!v)
		return 0;
	v->rx_packets++;
	v->rx_bytes += len;
	size(v, DIR_RX, len);
	return 0;
}

#ifdef HOOK_RAW_TP
/* net_dev_xmit(skb, rc, dev, skb_len) */
int on_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	return xmit((const void *)ctx->args[2], (int)ctx->args[1], (u32)ctx->args[3]);
}
int on_queue(struct bpf_raw_tracepoint_args *ctx) { return queue((const void *)ctx->args[0]); }
int on_receive(struct bpf_raw_tracepoint_args *ctx) { return receive((const void *)ctx->args[0]); }
#endif

#ifdef HOOK_TP
int on_tp_xmit(struct tracepoint__net__net_dev_xmit *args)
{
	return xmit(skb_dev(args->skbaddr), args->rc, args->len);
}
int on_tp_queue(struct tracepoint__net__net_dev_queue *args) { return queue(args->skbaddr); }
int on_tp_receive(struct tracepoint__net__netif_receive_skb *args) { return receive(args->skbaddr); }
#endif

#ifdef HOOK_KPROBE
/* dev_hard_start_xmit(first, dev, txq, ret): counted on entry, as sent. */
int on_kprobe_xmit(struct pt_regs *ctx)
{
	const void *skb = (const void *)PT_REGS_PARM1(ctx);
	u32 len = 0;
	READ_AT(len, skb, OFF_SKB_LEN);
	return xmit((const void *)PT_REGS_PARM2(ctx), 0, len);
}
int on_kprobe_receive(struct pt_regs *ctx)
{
	const void *skb = 0;
	/* __netif_receive_skb_core(struct sk_buff **pskb, ...) */
	bpf_probe_read_kernel(&skb, sizeof(skb), (void *)PT_REGS_PARM1(ctx));
	return receive(skb);
}
#endif

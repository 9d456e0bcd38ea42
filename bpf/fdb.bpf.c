/* fdb: a bridge's forwarding database at work, by namespace, bridge, port
 * and event: addresses learned, addresses that moved to another port (a
 * host that moved, or a loop: the same MAC flapping between ports),
 * entries updated and deleted (aged out, flushed). The learning tracepoint
 * fires only when the table changes, not for every frame: cheap.
 *
 * Hooks: HOOK_RAW_TP br_fdb_update(br, source, addr, vid, flags), traced
 *        on a new entry or one modified (another port: a move; new flags);
 *        fdb_delete(br, f). A move is told from a flag change by the port
 *        kept for each (bridge, address, vlan) in an LRU hash. */
#include <uapi/linux/ptrace.h>
#include "pyprobe.h"
#include "pyprobe_bpf.h"

struct fdb_key {
	u32 netns;
	u32 bridge;
	u32 port;
	u8 kind;
	u8 _pad[3];
};
BPF_TABLE("percpu_hash", struct fdb_key, u64, fdb, MAX_fdb);

struct where_key {
	u64 bridge; /* the struct net_bridge: one per bridge, whatever its namespace */
	u8 mac[6];
	u16 vid;
};
BPF_TABLE("lru_hash", struct where_key, u32, fdb_port, MAX_fdb_port);

/* A bridge's or port's device, its ifindex and namespace. */
static __always_inline void ids(const void *owner, u64 off, u32 *ifindex, u32 *netns)
{
	const void *dev = 0;
	*ifindex = 0;
	*netns = 0;
	if (!owner)
		return;
	READ_FAR(dev, owner, off);
	if (!dev)
		return;
	READ_FAR(*ifindex, dev, OFF_DEV_IFINDEX);
#if defined(OFF_DEV_NET) && defined(HAVE_NET_ID)
	const void *net = 0;
	READ_FAR(net, dev, OFF_DEV_NET);
	if (net) {
#if defined(OFF_NET_COOKIE) && defined(NET_ID_COOKIE)
		u64 cookie = 0;
		READ_FAR(cookie, net, OFF_NET_COOKIE);
		*netns = (u32)cookie;
#else
		READ_FAR(*netns, net, OFF_NET_INUM);
#endif
	}
#endif
}

static __always_inline int fdb_event(const void *br, const void *port, const void *addr, u16 vid,
				     int deleted)
{
	struct fdb_key k = {};
	u32 bridge_netns = 0, old = 0;
	ids(br, OFF_BR_DEV, &k.bridge, &bridge_netns);
	ids(port, OFF_PORT_DEV, &k.port, &k.netns);
	k.netns = bridge_netns; /* a port is in its bridge's namespace */
	struct where_key w = {.bridge = (u64)br, .vid = vid};
	bpf_probe_read_kernel(w.mac, 6, addr);
	u32 *seen = fdb_port.lookup(&w);
	if (deleted) {
		k.kind = PYPROBE_FDB_DELETED;
		fdb_port.delete(&w);
	} else if (!seen) {
		k.kind = PYPROBE_FDB_LEARNED;
		fdb_port.update(&w, &k.port);
	} else if (*seen != k.port) {
		k.kind = PYPROBE_FDB_MOVED;
		old = *seen;
		*seen = k.port;
	} else {
		k.kind = PYPROBE_FDB_UPDATED;
	}
	u64 zero = 0, *c = fdb.lookup_or_try_init(&k, &zero);
	if (c)
		(*c)++;
	else
		map_full(MAP_ID_fdb);
#ifdef STREAM
	struct fdb_event *e = event_reserve(sizeof(struct fdb_event));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->netns = k.netns;
	e->bridge = k.bridge;
	e->port = k.port;
	e->old_port = old;
	__builtin_memcpy(e->mac, w.mac, 6);
	e->vid = vid;
	e->kind = k.kind;
	event_submit(e);
#endif
	return 0;
}

#ifdef HOOK_RAW_TP
int on_update(struct bpf_raw_tracepoint_args *ctx)
{
	return fdb_event((const void *)ctx->args[0], (const void *)ctx->args[1],
			 (const void *)ctx->args[2], (u16)ctx->args[3], 0);
}

int on_delete(struct bpf_raw_tracepoint_args *ctx)
{
	const void *f = (const void *)ctx->args[1];
	const void *port = 0;
	u16 vid = 0;
	READ_FAR(port, f, OFF_FDB_DST);
	READ_FAR(vid, f, OFF_FDB_VID);
	return fdb_event((const void *)ctx->args[0], port, (const char *)f + OFF_FDB_ADDR, vid, 1);
}
#endif

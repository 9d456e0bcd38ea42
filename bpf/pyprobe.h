/* Structs shared between the BPF programs and Python (pyprobe/structs.py
 * mirrors them with ctypes; tests/unit/test_structs.py compiles this header
 * with gcc and compares every offset and size). Fixed-width types only, and
 * explicit padding, so both sides agree without relying on the compiler. */
#ifndef PYPROBE_H
#define PYPROBE_H

#define PYPROBE_COMM_LEN 16
/* TCP states are 1..12 (TCP_NEW_SYN_RECV = 12): 16 slots each way. */
#define PYPROBE_STATE_SLOTS 16

/* tcpstate_event.flags */
#define PYPROBE_F_OWNER_KNOWN 0x1 /* pid/comm: the socket's owner, seen in process context */
#define PYPROBE_F_DELTA_KNOWN 0x2 /* delta_ns: measured since this socket's previous change */
#define PYPROBE_F_LIFE_KNOWN 0x8   /* life_ns: since the socket was born (connect, listen, accept) */
#define PYPROBE_F_BYTES_KNOWN 0x10 /* rx/tx_bytes: read from the socket, on a change to CLOSE */

struct tcpstate_event {
	__u64 ts_ns;    /* bpf_ktime_get_ns() at the change */
	__u64 skaddr;   /* kernel address of the socket: its identity while alive */
	__u64 delta_ns; /* time spent in oldstate */
	__u64 life_ns;  /* time since the socket's first change, its birth */
	__u64 rx_bytes; /* tcp_sock.bytes_received, as tcplife and tcp_info: */
	__u64 tx_bytes; /* tcp_sock.bytes_acked; sequence space (a SYN, a FIN count 1) */
	__u64 cgroup;   /* the socket's cgroup (v2 id: its directory's inode), 0 when unknown */
	__u32 pid;      /* tgid */
	__u32 netns;    /* network namespace inode, 0 when unknown */
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u16 family;
	__u8 oldstate;
	__u8 newstate;
	__u32 flags;
	char comm[PYPROBE_COMM_LEN];
	__u32 _pad;
};

/* drop_event.flags */
#define PYPROBE_F_HAS_TUPLE 0x4 /* saddr/daddr/ports parsed from the packet */

struct drop_event {
	__u64 ts_ns;
	__u64 location; /* kernel address that freed the packet */
	__u64 skaddr;   /* the socket it belonged to, 0 when none */
	__u64 cgroup;   /* that socket's cgroup (v2 id), 0 when none or unknown */
	__u32 pid;      /* the socket's owner, or the task in process context */
	__u32 netns;
	__u32 ifindex;
	__u32 reason; /* enum skb_drop_reason, as numbered by the running kernel */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 protocol; /* ethertype, host byte order */
	__u8 family;    /* AF_INET / AF_INET6 of the IP header, 0 when none */
	__u8 l4proto;   /* IPPROTO_* */
	__u32 flags;
	char comm[PYPROBE_COMM_LEN];
	__u32 _pad;
};

/* tcp_event.kind */
#define PYPROBE_TCP_RETRANSMIT 1
#define PYPROBE_TCP_SYNACK_RETRANSMIT 2
#define PYPROBE_TCP_RESET_SENT 3
#define PYPROBE_TCP_RESET_RECEIVED 4

struct tcp_event {
	__u64 ts_ns;
	__u64 skaddr;
	__u64 cgroup; /* the socket's cgroup (v2 id), 0 when none or unknown */
	__u32 pid;
	__u32 netns;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 kind;  /* PYPROBE_TCP_* */
	__u8 state; /* the socket's TCP state, 0 when there is no socket */
	__u32 reason; /* resets sent: enum sk_rst_reason */
	__u32 segs;   /* retransmits: segments */
	__u32 flags;
	char comm[PYPROBE_COMM_LEN];
};

/* icmp_event.type: the ICMP errors the kernel sends (uapi linux/icmp.h) */
#define PYPROBE_ICMP_DEST_UNREACH 3
#define PYPROBE_ICMP_SOURCE_QUENCH 4
#define PYPROBE_ICMP_REDIRECT 5
#define PYPROBE_ICMP_TIME_EXCEEDED 11
#define PYPROBE_ICMP_PARAMETERPROB 12

/* An ICMP error sent (icmp:icmp_send), with the packet it answers: its
 * source is where the error goes. */
struct icmp_event {
	__u64 ts_ns;
	__u32 netns;   /* the namespace of the device the packet came in on */
	__u32 ifindex; /* that device */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 type;
	__u8 code;
	__u8 family;  /* of the packet answered, 0 when not parsed */
	__u8 l4proto; /* IPPROTO_* */
	__u32 flags;  /* PYPROBE_F_HAS_TUPLE */
	__u32 _pad;
};

/* trace_event.hook: where the packet was seen (bpf/trace.bpf.c) */
#define PYPROBE_HOP_QUEUE 1        /* net_dev_queue: handed to a device's queueing */
#define PYPROBE_HOP_START_XMIT 2   /* net_dev_start_xmit: to the driver */
#define PYPROBE_HOP_XMIT 3         /* net_dev_xmit: the driver took it (reason: its return code) */
#define PYPROBE_HOP_NETIF_RX 4     /* netif_rx: into the per-CPU backlog */
#define PYPROBE_HOP_GRO 5          /* napi_gro_receive_entry: a NAPI poll handed it over */
#define PYPROBE_HOP_RECEIVE_ENTRY 6 /* netif_receive_skb_entry */
#define PYPROBE_HOP_RECEIVE 7      /* netif_receive_skb: the stack takes it */
#define PYPROBE_HOP_ENQUEUE 8      /* qdisc_enqueue (reason: the qdisc's handle) */
#define PYPROBE_HOP_DEQUEUE 9      /* qdisc_dequeue */
#define PYPROBE_HOP_DROP 10        /* kfree_skb (reason, location) */
#define PYPROBE_HOP_CONSUME 11     /* consume_skb (location) */
#define PYPROBE_HOP_COPY 12        /* skb_copy_datagram_iovec: read by a process (pid, comm) */
#define PYPROBE_HOP_ICMP_SEND 13   /* icmp_send about it (reason: type << 8 | code) */
#define PYPROBE_HOP_RECEIVE_LIST 14 /* netif_receive_skb_list_entry */

/* trace_event.flags */
#define PYPROBE_F_FIRST 0x20    /* the packet's first hop: data[] holds its first bytes */
#define PYPROBE_F_ETHERNET 0x40 /* data[] starts at an Ethernet header, else at IP */
#define PYPROBE_F_ENCAP 0x80    /* its identity changed here: encapsulated */
#define PYPROBE_F_DECAP 0x100   /* back to the identity it had before: decapsulated */
#define PYPROBE_F_CLONE 0x200   /* another skb with the packet's identity: a clone (raw socket, tap) */
#define PYPROBE_F_NAT 0x400     /* its addresses or ports rewritten here: NAT */
#define PYPROBE_TRACE_SNAP 256  /* bytes of a packet kept (PF_WINDOW, bpf/trace_filter.h) */

/* One hop of a traced packet. Hops are sent without data[] (the record
 * ends at it); the first hop, and a drop, with it. */
struct trace_event {
	__u64 ts_ns;
	__u64 pkt;      /* the packet's id: its hops share it */
	__u64 skaddr;   /* the sk_buff */
	__u64 location; /* kfree_skb/consume_skb: where it was freed */
	__u32 netns;    /* inode of the device's namespace (else the socket's) */
	__u32 ifindex;  /* 0: no device */
	__u32 len;      /* skb->len */
	__u32 wirelen;  /* from the start of data[] to the packet's end */
	__u32 reason;   /* see hook */
	__u32 pid;      /* HOP_COPY: the reader */
	__u32 flags;
	__u16 caplen;   /* bytes of data[] that are the packet's */
	__u8 hook;      /* PYPROBE_HOP_* */
	__u8 _pad0;
	char comm[PYPROBE_COMM_LEN];
	__u8 data[PYPROBE_TRACE_SNAP];
};

/* neigh_event.kind */
#define PYPROBE_NEIGH_CREATED 1  /* an entry made (to resolve, or learned from an ARP/NDISC packet) */
#define PYPROBE_NEIGH_FAILED 2   /* resolution failed: no answer after the probes */
#define PYPROBE_NEIGH_RESOLVED 3 /* an INCOMPLETE entry got its link-layer address */

/* neigh_event.old_state/new_state: NUD_* (uapi linux/neighbour.h) */
#define PYPROBE_NUD_NONE 0x00
#define PYPROBE_NUD_INCOMPLETE 0x01
#define PYPROBE_NUD_REACHABLE 0x02
#define PYPROBE_NUD_STALE 0x04
#define PYPROBE_NUD_DELAY 0x08
#define PYPROBE_NUD_PROBE 0x10
#define PYPROBE_NUD_FAILED 0x20
#define PYPROBE_NUD_NOARP 0x40
#define PYPROBE_NUD_PERMANENT 0x80

/* A neighbour (ARP/NDISC) entry's event. */
struct neigh_event {
	__u64 ts_ns;
	__u32 netns;
	__u32 ifindex;
	__u8 addr[16]; /* the entry's IP address (IPv4 in the first 4 bytes) */
	__u8 family;   /* AF_INET, AF_INET6 */
	__u8 kind;
	__u8 old_state; /* NUD_* before, where known */
	__u8 new_state; /* NUD_* after */
	__u32 _pad;
};

/* fdb_event.kind */
#define PYPROBE_FDB_LEARNED 1 /* a new address learned on a port */
#define PYPROBE_FDB_MOVED 2   /* an address seen on another port than its entry's */
#define PYPROBE_FDB_UPDATED 3 /* an entry's flags changed, same port */
#define PYPROBE_FDB_DELETED 4 /* an entry removed: aged out, flushed, deleted */

/* A bridge forwarding database entry's event. */
struct fdb_event {
	__u64 ts_ns;
	__u32 netns;
	__u32 bridge;   /* the bridge's ifindex */
	__u32 port;     /* the port's ifindex (0: the bridge itself) */
	__u32 old_port; /* a move's port before */
	__u8 mac[6];
	__u16 vid;
	__u8 kind;
	__u8 _pad[7];
};

#endif /* PYPROBE_H */

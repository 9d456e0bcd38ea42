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

#endif /* PYPROBE_H */

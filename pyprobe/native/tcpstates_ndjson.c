/* `pyprobe tcpstates -j`'s hot path in C: tcpstate_event records straight
 * from the BPF ring buffer's mapping to NDJSON, the bytes TcpStates.json_lines
 * writes (a unit test compares the two). In CPython the line costs ~2.8 us an
 * event on this kind of machine (two float reprs and a 16-field format alone
 * are ~1.8 us); under connection churn at 130k+ events/s that is a third of
 * a CPU taken from the workload.
 *
 * Built at first use by pyprobe/ndjson.py (cc -O2 -shared), loaded through
 * ctypes; without a compiler the Python path stays. Anything unusual is
 * handed back to Python rather than handled twice: a record of another size,
 * a comm that is not plain ASCII, a namespace whose name Python has not
 * looked up yet. time and ms are exact decimals of their nanoseconds.
 *
 * The ring's layout is the kernel's (kernel/bpf/ringbuf.c): each record is a
 * u32 length (bit 31 busy, bit 30 discarded) and a u32 page offset, then the
 * sample, padded to 8 bytes; the data pages are mapped twice in a row, so a
 * record that wraps is contiguous. */
#include <arpa/inet.h>
#include <linux/types.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "pyprobe.h" /* struct tcpstate_event, shared with the BPF side */

#define BUSY (1u << 31)
#define DISCARD (1u << 30)
#define HDR 8

enum stop { CAUGHT_UP = 0, OUT_FULL = 1, HAND_BACK = 2, NEW_NETNS = 3 };

/* Appenders: printf parses its format and does locale work per call, which
 * at 16 fields a line cost more than the rest of the line. */
static char *put(char *o, const char *text)
{
	size_t n = strlen(text);
	memcpy(o, text, n);
	return o + n;
}

static char *put_u64(char *o, uint64_t v)
{
	char digits[20];
	int n = 0;
	do {
		digits[n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (n)
		*o++ = digits[--n];
	return o;
}

/* v / 10^places as an exact decimal, every place written: "%d.%0*d" */
static char *put_fixed(char *o, uint64_t v, int places, uint64_t scale)
{
	o = put_u64(o, v / scale);
	*o++ = '.';
	v %= scale;
	for (int i = places - 1; i >= 0; i--) {
		o[i] = '0' + v % 10;
		v /= 10;
	}
	return o + places;
}

static char *put_hex(char *o, uint64_t v)
{
	char digits[16];
	int n = 0;
	do {
		digits[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	*o++ = '0';
	*o++ = 'x';
	while (n)
		*o++ = digits[--n];
	return o;
}

/* json.dumps of a comm (ensure_ascii): 0 when a byte is not ASCII. */
static int comm_json(char *out, const char *comm, int len)
{
	int end = len, n = 0;
	while (end > 0 && comm[end - 1] == '\0')
		end--;
	out[n++] = '"';
	for (int i = 0; i < end; i++) {
		unsigned char c = comm[i];
		if (c >= 0x80)
			return 0;
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = c;
		} else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
			out[n++] = '\\';
			out[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
		} else if (c < 0x20 || c == 0x7f) {
			n += sprintf(out + n, "\\u%04x", c);
		} else {
			out[n++] = c;
		}
	}
	out[n++] = '"';
	out[n] = '\0';
	return n;
}

/* The text of the last comm or address seen, kept while the next ones are
 * the same bytes (a busy stream repeats them: one process, one peer). */
struct text {
	int valid, v6;
	unsigned char raw[16];
	char text[16 * 6 + 3]; /* a comm, quoted, every byte \u-escaped */
};

static int remember_comm(struct text *t, const char *comm)
{
	if (t->valid && !memcmp(t->raw, comm, 16))
		return 1;
	t->valid = comm_json(t->text, comm, 16) > 0;
	memcpy(t->raw, comm, 16);
	return t->valid;
}

static int remember_addr(struct text *t, const unsigned char *addr, int v6)
{
	if (t->valid && t->v6 == v6 && !memcmp(t->raw, addr, v6 ? 16 : 4))
		return 1;
	if (v6) {
		t->valid = inet_ntop(AF_INET6, addr, t->text, sizeof(t->text)) != NULL;
	} else { /* inet_ntop's IPv4 is a sprintf */
		char *o = t->text;
		for (int i = 0; i < 4; i++) {
			if (i)
				*o++ = '.';
			o = put_u64(o, addr[i]);
		}
		*o = '\0';
		t->valid = 1;
	}
	t->v6 = v6;
	memcpy(t->raw, addr, 16);
	return t->valid;
}

/* Format records from *cons (the ring's consumer position, in its mapping)
 * on. Returns the bytes written to out; *cons is then the first record not
 * consumed, which the kernel may reuse the space before; *why says why it stopped, *inode the namespace asked for
 * (NEW_NETNS). ns_ids/ns_json: the namespaces Python has named (JSON text:
 * a quoted name or null). */
long pyprobe_tcpstates_ndjson(const char *prod_page, const char *data, uint64_t mask,
			      uint64_t *cons, uint64_t mono_to_wall_ns, const char *const *states,
			      const uint32_t *ns_ids, const char *const *ns_json, int n_ns,
			      char *out, long cap, int *why, uint32_t *inode)
{
	uint64_t at = *cons;
	uint64_t prod = __atomic_load_n((const uint64_t *)prod_page, __ATOMIC_ACQUIRE);
	long used = 0;
	int last_ns = -1;
	struct text last_comm = {0}, last_src = {0}, last_dst = {0};

	*why = CAUGHT_UP;
	while (at < prod) {
		const char *rec = data + (at & mask);
		uint32_t len = __atomic_load_n((const uint32_t *)rec, __ATOMIC_ACQUIRE);
		uint32_t size = len & ~(BUSY | DISCARD);
		uint64_t next = at + ((size + HDR + 7) & ~7ull);
		if (len & BUSY)
			break; /* reserved, not yet submitted */
		if (len & DISCARD) {
			at = next;
			continue;
		}
		if (size != sizeof(struct tcpstate_event)) {
			*why = HAND_BACK;
			break;
		}
		const struct tcpstate_event *e = (const void *)(rec + HDR);
		int ns = -1;
		if (last_ns >= 0 && ns_ids[last_ns] == e->netns) {
			ns = last_ns;
		} else {
			for (int i = 0; i < n_ns; i++)
				if (ns_ids[i] == e->netns) {
					ns = i;
					break;
				}
		}
		if (ns < 0) {
			*why = NEW_NETNS;
			*inode = e->netns;
			break;
		}
		last_ns = ns;
		size_t ns_len = strlen(ns_json[ns]);
		if (cap - used < (long)(1024 + ns_len)) {
			*why = OUT_FULL;
			break;
		}
		int v6 = e->family == AF_INET6;
		if (!remember_comm(&last_comm, e->comm) || !remember_addr(&last_src, e->saddr, v6) ||
		    !remember_addr(&last_dst, e->daddr, v6)) {
			*why = HAND_BACK;
			break;
		}
		char *o = out + used;
		o = put(o, "{\"time\":");
		o = put_fixed(o, e->ts_ns + mono_to_wall_ns, 9, 1000000000ull);
		o = put(o, ",\"ts_ns\":");
		o = put_u64(o, e->ts_ns);
		o = put(o, ",\"skaddr\":\"");
		o = put_hex(o, e->skaddr);
		o = put(o, "\",\"pid\":");
		o = put_u64(o, e->pid);
		o = put(o, ",\"comm\":");
		o = put(o, last_comm.text);
		o = put(o, (e->flags & PYPROBE_F_OWNER_KNOWN) ? ",\"owner_known\":true,\"netns\":"
							      : ",\"owner_known\":false,\"netns\":");
		o = put_u64(o, e->netns);
		o = put(o, v6 ? ",\"family\":\"IPv6\",\"saddr\":\"" : ",\"family\":\"IPv4\",\"saddr\":\"");
		o = put(o, last_src.text);
		o = put(o, "\",\"sport\":");
		o = put_u64(o, e->sport);
		o = put(o, ",\"daddr\":\"");
		o = put(o, last_dst.text);
		o = put(o, "\",\"dport\":");
		o = put_u64(o, e->dport);
		o = put(o, ",\"oldstate\":\"");
		o = put(o, states[e->oldstate]);
		o = put(o, "\",\"newstate\":\"");
		o = put(o, states[e->newstate]);
		o = put(o, "\",\"ms\":");
		if (e->flags & PYPROBE_F_DELTA_KNOWN)
			o = put_fixed(o, e->delta_ns, 6, 1000000ull);
		else
			o = put(o, "null");
		o = put(o, ",\"life_ms\":");
		if (e->flags & PYPROBE_F_LIFE_KNOWN)
			o = put_fixed(o, e->life_ns, 6, 1000000ull);
		else
			o = put(o, "null");
		int bytes = e->flags & PYPROBE_F_BYTES_KNOWN;
		o = put(o, ",\"rx_bytes\":");
		o = bytes ? put_u64(o, e->rx_bytes) : put(o, "null");
		o = put(o, ",\"tx_bytes\":");
		o = bytes ? put_u64(o, e->tx_bytes) : put(o, "null");
		o = put(o, ",\"netns_name\":");
		memcpy(o, ns_json[ns], ns_len);
		o += ns_len;
		*o++ = '}';
		*o++ = '\n';
		used = o - out;
		at = next;
	}
	/* Publish the space given back only after every read of it (release). */
	__atomic_store_n(cons, at, __ATOMIC_RELEASE);
	return used;
}

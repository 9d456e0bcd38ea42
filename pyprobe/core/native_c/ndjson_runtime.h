/* The runtime of the C NDJSON formatters (core/native.py): appenders and
 * the text of comms and addresses, included by each generated formatter.
 *
 * A busy stream's -j hot path in C: records straight from the BPF ring
 * buffer's mapping to NDJSON, the bytes the Python path (core/eventcode.py,
 * json_lines) writes (a unit test compares the two). In CPython a line costs
 * ~2.8 us an event on this kind of machine (two float reprs and a 16-field
 * format alone are ~1.8 us); under connection churn at 130k+ events/s that
 * is a third of a CPU taken from the workload.
 *
 * Anything unusual is handed back to Python rather than handled twice: a
 * record of another size, a comm that is not plain ASCII, a namespace whose
 * name Python has not looked up yet. Times and ms are exact decimals of
 * their nanoseconds.
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


#define BUSY (1u << 31)
#define DISCARD (1u << 30)
#define HDR 8

enum stop { CAUGHT_UP = 0, OUT_FULL = 1, HAND_BACK = 2, NEW_NETNS = 3, NEW_CGROUP = 4 };

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

/* What a pcap filter, translated from classic BPF into C by
 * pyprobe/core/pcapfilter.py, is compiled with: in the trace program (bpf/
 * trace.bpf.c), over the bytes of a packet copied into a map value, and in
 * the unit tests, with the system's cc over the same bytes, where libpcap's
 * own bpf_filter() judges them too (tests/unit/test_pcapfilter.py).
 *
 * A translated filter is the body of
 *     u32 f(const u8 *P_, u32 caplen, u32 wirelen)
 * P_: the packet's first caplen bytes (caplen <= PF_WINDOW), in a buffer of
 * PF_BUFFER bytes; wirelen: its length on the wire. Every load is checked
 * against caplen first (as bpf_filter checks it against its buflen: beyond
 * it, the filter returns 0); an indirect load's offset is then masked to
 * the window as well, which changes nothing at run time but bounds it for
 * the verifier, which relates no register to another. Jumps are gotos, all
 * forward (classic BPF has no backward jump): no loop for the verifier. */
#ifndef PYPROBE_TRACE_FILTER_H
#define PYPROBE_TRACE_FILTER_H

#define PF_WINDOW 256 /* bytes of each packet the filter sees: a power of two */
#define PF_MASK (PF_WINDOW - 1)
#define PF_BUFFER (2 * PF_WINDOW) /* a masked offset + 3 stays inside */

/* Big-endian loads, byte by byte: no alignment to assume. */
#define PF_LD8(o) ((u32)P_[(o)])
#define PF_LD16(o) (((u32)P_[(o)] << 8) | (u32)P_[(o) + 1])
#define PF_LD32(o) \
	(((u32)P_[(o)] << 24) | ((u32)P_[(o) + 1] << 16) | ((u32)P_[(o) + 2] << 8) | (u32)P_[(o) + 3])

#endif /* PYPROBE_TRACE_FILTER_H */

/* Connection churn for the benchmark: connect, 1-byte request, 1-byte reply,
 * close — as fast as one client can, for a fixed time.
 *   churn server ADDR PORT            (serves until killed)
 *   churn client ADDR PORT SECONDS [MAX] (prints connections/s; stops at MAX)
 *   churn ticks ADDR PORT START INTERVAL GUARD COUNT
 *                                     (the client, from START, CLOCK_MONOTONIC
 *                                      seconds, for COUNT intervals: a line
 *                                      each as it ends, connections/s in it
 *                                      less its first GUARD seconds)
 *   churn listen ADDR PORT SECONDS RATE CLIENTS
 *                                     (CLIENTS processes together aim at RATE
 *                                      attempts/s, each a listen() and a
 *                                      disconnect of one socket per client on
 *                                      PORT+client: two state changes, no
 *                                      packets; prints attempts made and the
 *                                      rate reached)
 *   churn udp ADDR PORT SECONDS SIZE  (prints datagrams/s sent)
 *   churn udpsink ADDR PORT           (reads datagrams until killed)       */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr_of(const char *ip, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static int server(const char *ip, int port)
{
	struct sockaddr_in a = addr_of(ip, port);
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (void *)&a, sizeof(a)) || listen(s, 4096)) {
		perror("server");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int c = accept(s, NULL, NULL);
		char b;
		if (c < 0)
			continue;
		if (read(c, &b, 1) == 1)
			(void)!write(c, &b, 1);
		close(c);
	}
}

/* One connection: 1 if its request was answered. */
static int one_connection(const struct sockaddr_in *a)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	int ok, s = socket(AF_INET, SOCK_STREAM, 0);
	char b = 'x';
	ok = connect(s, (const void *)a, sizeof(*a)) == 0 && write(s, &b, 1) == 1 &&
	     read(s, &b, 1) == 1;
	/* Close with RST instead of TIME_WAIT so a run cannot exhaust the
	 * ephemeral ports; the states passed through are the same up to
	 * FIN_WAIT1 on this side. */
	setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(s);
	return ok;
}

static int client(const char *ip, int port, double secs, long max)
{
	struct sockaddr_in a = addr_of(ip, port);
	long n = 0;
	double end = now() + secs, start = now();
	while (now() < end && (max <= 0 || n < max))
		n += one_connection(&a);
	printf("%.1f\n", n / (now() - start));
	return 0;
}

/* The fine A/B phase's churn (bench/fine.py): programs are attached or
 * detached as each interval ends, which takes a few ms (now and then
 * seconds: fine.py leaves out the intervals that spoils); connections made
 * in an interval's first GUARD seconds are not counted, so none made while
 * that happens is charged to the wrong state. Clients given the same START
 * report the same intervals. */
static int ticks(const char *ip, int port, double start, double interval, double guard,
		 long count)
{
	struct sockaddr_in a = addr_of(ip, port);
	double t = now();
	if (t < start) {
		struct timespec ts = {(time_t)(start - t), (long)((start - t - (time_t)(start - t)) * 1e9)};
		nanosleep(&ts, NULL);
	}
	for (long k = 0; k < count; k++) {
		double from = start + k * interval + guard, end = start + (k + 1) * interval;
		long n = 0;
		while (now() < from)
			one_connection(&a);
		while (now() < end)
			n += one_connection(&a);
		printf("%.1f\n", n / (interval - guard));
		fflush(stdout);
	}
	return 0;
}

/* A listening socket taken back down: connect(AF_UNSPEC) on a listener is
 * tcp_disconnect(), LISTEN -> CLOSE; listen() again, CLOSE -> LISTEN. Two
 * state changes for two syscalls and no packets: 2.5-4.7x the events/s of
 * connection attempts to a closed port (SYN, RST) here. The lossless search
 * needs a source of state changes faster than the tools it measures. */
static int listener(struct sockaddr_in *a)
{
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s < 0 || bind(s, (void *)a, sizeof(*a))) {
		perror("listen");
		_exit(1);
	}
	return s;
}

static long one_toggle(int s)
{
	struct sockaddr un = {.sa_family = AF_UNSPEC};
	return listen(s, 1) == 0 && connect(s, &un, sizeof(un)) == 0;
}

/* A fixed offered load (the lossless-rate search): each client keeps to its
 * schedule, sleeping when ahead; when it falls behind it goes on at once, so
 * the rate reached says when the machine could not keep up. */
static int paced(const char *ip, int port, double secs, double rate, int clients)
{
	int fds[2];
	double start = now();
	if (pipe(fds))
		return 1;
	for (int c = 0; c < clients; c++) {
		if (fork() == 0) {
			double gap = clients / rate, next = start + c * gap / clients;
			long n = 0;
			struct sockaddr_in own = addr_of(ip, port + c);
			int ls = listener(&own);
			while (next < start + secs) {
				double t = now();
				if (t < next) {
					struct timespec ts = {0, (long)((next - t) * 1e9)};
					nanosleep(&ts, NULL);
				}
				n += one_toggle(ls);
				next += gap;
			}
			(void)!write(fds[1], &n, sizeof(n));
			_exit(0);
		}
	}
	long total = 0, n;
	for (int c = 0; c < clients; c++)
		if (read(fds[0], &n, sizeof(n)) == sizeof(n))
			total += n;
	while (wait(NULL) > 0)
		;
	printf("%ld %.1f\n", total, total / (now() - start));
	return 0;
}

static int udpsink(const char *ip, int port)
{
	struct sockaddr_in a = addr_of(ip, port);
	char buf[2048];
	int big = 1 << 22, s = socket(AF_INET, SOCK_DGRAM, 0);
	setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	if (bind(s, (void *)&a, sizeof(a))) {
		perror("udpsink");
		return 1;
	}
	for (;;)
		(void)!recv(s, buf, sizeof(buf), 0);
}

static int udp(const char *ip, int port, double secs, int size)
{
	struct sockaddr_in a = addr_of(ip, port);
	char buf[2048] = {0};
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	long n = 0;
	double end = now() + secs, start = now();
	if (size > (int)sizeof(buf))
		size = sizeof(buf);
	while (now() < end)
		for (int i = 0; i < 64; i++)
			if (sendto(s, buf, size, 0, (void *)&a, sizeof(a)) == size)
				n++;
	printf("%.1f\n", n / (now() - start));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "server"))
		return server(argv[2], atoi(argv[3]));
	if (argc >= 5 && !strcmp(argv[1], "client"))
		return client(argv[2], atoi(argv[3]), atof(argv[4]), argc >= 6 ? atol(argv[5]) : 0);
	if (argc >= 8 && !strcmp(argv[1], "ticks"))
		return ticks(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]), atof(argv[6]),
			     atol(argv[7]));
	if (argc >= 7 && !strcmp(argv[1], "listen"))
		return paced(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]), atoi(argv[6]));
	if (argc >= 4 && !strcmp(argv[1], "udpsink"))
		return udpsink(argv[2], atoi(argv[3]));
	if (argc >= 6 && !strcmp(argv[1], "udp"))
		return udp(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: churn server|client|listen|udp|udpsink ...\n");
	return 2;
}

/* glia-cni, the fast path (see src/glia/cni/shim.py for why and for the wire).
 *
 * VERSION is answered here. Every other verb is carried, unread, to the node's
 * agent, which runs the Python plugin's code on it and sends back stdout,
 * stderr and the exit code. This program decides nothing about CNI: whenever it
 * cannot deliver an invocation and get a complete answer, it execs the Python
 * plugin with the same environment and stdin, which then waits for a starting
 * agent, queues a DEL for an agent that is down, or reports the error. The
 * Python plugin is found at run time: glia-cni-python in the directory of the
 * executable as it was started (argv[0] if it holds a slash, which is how
 * runtimes start plugins, else /proc/self/exe), else the path compiled in
 * (GLIA_CNI_FALLBACK; empty in a wheel, whose installer puts the sibling). Retrying is safe: ADD, DEL, CHECK and GC are idempotent in the
 * agent. GLIA_CNI_DEBUG=1 says on stderr why the fast path was left.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <limits.h>
#include <unistd.h>

#include "glia-cni-shim.h"

#define MAX_ANSWER (16 * 1024 * 1024)
#define MAX_DEPTH 64
#define SIBLING "glia-cni-python"

extern char **environ;
static const char *self_path; /* argv[0] */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n)
{
	if (n > MAX_ANSWER || b->len + n > MAX_ANSWER + GLIA_CNI_MAX_INPUT)
		return -1;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

/* All of p[0..n) to fd; a socket gets send() so that a closed peer is an
 * error (EPIPE), not SIGPIPE. */
static int put_all(int fd, const char *p, size_t n, int is_socket)
{
	while (n) {
		ssize_t w = is_socket ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	return put_all(fd, p, n, 0);
}

/* s inside a JSON string: paths may hold quotes, backslashes, control bytes. */
static void put_json_chars(const char *s)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
}

/* The directory this executable was started from, into dir: argv[0]'s when it
 * holds a slash (a symlink's own directory, not its target's), else that of
 * /proc/self/exe. 0, or -1 when it cannot be told. */
static int self_dir(char *dir, size_t len)
{
	const char *slash;
	ssize_t n;

	if (self_path && strchr(self_path, '/')) {
		slash = strrchr(self_path, '/');
		n = slash - self_path;
		if ((size_t)n + 1 > len)
			return -1;
		memcpy(dir, self_path, (size_t)n);
		dir[n] = '\0';
		if (n == 0)
			strcpy(dir, "/");
		return 0;
	}
	n = readlink("/proc/self/exe", dir, len - 1);
	if (n <= 0 || (size_t)n >= len - 1)
		return -1;
	dir[n] = '\0';
	slash = strrchr(dir, '/');
	if (!slash)
		return -1;
	dir[slash == dir ? 1 : slash - dir] = '\0';
	return 0;
}

/* The Python plugin to hand over to: SIBLING next to this executable, else the
 * compiled-in path, else NULL. sibling gets the path looked at ("" if none). */
static const char *python_plugin(char *sibling, size_t len)
{
	char dir[PATH_MAX];
	int n;

	sibling[0] = '\0';
	if (self_dir(dir, sizeof(dir)) == 0) {
		n = snprintf(sibling, len, "%s%s" SIBLING, dir,
			     dir[strlen(dir) - 1] == '/' ? "" : "/");
		if (n < 0 || (size_t)n >= len)
			sibling[0] = '\0';
		else if (access(sibling, X_OK) == 0)
			return sibling;
	}
	return GLIA_CNI_FALLBACK[0] ? GLIA_CNI_FALLBACK : NULL;
}

/* Hand over to the Python plugin with stdin's bytes; never returns. */
static void __attribute__((noreturn, format(printf, 2, 3)))
fallback(const struct buf *in, const char *why, ...)
{
	char *argv[] = { "glia-cni", NULL };
	char sibling[PATH_MAX + sizeof(SIBLING) + 1];
	const char *debug = getenv("GLIA_CNI_DEBUG"), *plugin;

	if (debug && *debug && strcmp(debug, "0") != 0) {
		va_list ap;

		fputs("glia-cni: fast path left: ", stderr);
		va_start(ap, why);
		vfprintf(stderr, why, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	if (in) {
		/* stdin was consumed: give the plugin a file with the same bytes. */
		int fd = memfd_create("glia-cni-stdin", MFD_CLOEXEC);

		if (fd < 0 || write_all(fd, in->p, in->len) < 0 ||
		    lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0) {
			printf("{\"code\": 5, \"cniVersion\": \"1.0.0\", \"msg\": "
			       "\"glia-cni: cannot pass stdin on: %s\"}\n",
			       strerror(errno));
			exit(1);
		}
		close(fd);
	}
	plugin = python_plugin(sibling, sizeof(sibling));
	if (!plugin) {
		fputs("{\"code\": 999, \"cniVersion\": \"1.0.0\", \"msg\": "
		      "\"glia-cni: no Python plugin to hand over to: ", stdout);
		put_json_chars(sibling[0] ? sibling : SIBLING " next to glia-cni");
		fputs(" is missing and none is compiled in (install with `glia cni install`)\"}\n",
		      stdout);
		exit(1);
	}
	execv(plugin, argv);
	fputs("{\"code\": 999, \"cniVersion\": \"1.0.0\", \"msg\": "
	      "\"glia-cni: cannot run the plugin ", stdout);
	put_json_chars(plugin);
	printf(": %s\"}\n", strerror(errno));
	exit(1);
}

static int read_stdin(struct buf *in)
{
	char chunk[65536];

	for (;;) {
		ssize_t r = read(0, chunk, sizeof(chunk));

		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			/* EBADF: started with stdin closed, which reads as empty. */
			return errno == EBADF ? 0 : -1;
		}
		if (in->len + (size_t)r > GLIA_CNI_MAX_INPUT || buf_add(in, chunk, (size_t)r) < 0)
			return -1;
	}
}

/* --- the configuration's top-level "agentSocket", without a JSON parser ----
 * The scan walks strings and nesting only. It answers 1 (found, copied into
 * out), 0 (no such key: the default socket) or -1 (not sure: the Python plugin
 * decides). Not sure covers a top level that is not an object, a top-level key
 * or the value written with escapes, a value that is not a string, a path that
 * does not fit a unix socket address, and anything malformed. The last
 * occurrence of a repeated key counts, as with Python's json module. */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at an opening quote: the end of the string (after the closing quote) or
 * NULL; *escaped tells whether a backslash occurs in it. */
static const char *scan_string(const char *p, const char *end, int *escaped)
{
	*escaped = 0;
	for (p++; p < end; p++) {
		if (*p == '\\') {
			*escaped = 1;
			p++;
		} else if (*p == '"') {
			return p + 1;
		} else if ((unsigned char)*p < 0x20) {
			return NULL;
		}
	}
	return NULL;
}

static int find_agent_socket(const char *p, const char *end, char *out, size_t outlen)
{
	static const char key[] = "\"agentSocket\"";
	int depth = 0, found = 0, expect_key = 0;

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return -1;
	while (p < end) {
		char c = *p;

		if (c == '"') {
			int escaped;
			const char *s = p, *e = scan_string(p, end, &escaped);

			if (!e)
				return -1;
			if (depth == 1 && expect_key) {
				const char *q = skip_ws(e, end);

				if (q >= end || *q != ':')
					return -1;
				if (escaped)
					return -1;
				if ((size_t)(e - s) == sizeof(key) - 1 && !memcmp(s, key, sizeof(key) - 1)) {
					const char *v = skip_ws(q + 1, end), *ve;
					size_t n;

					if (v >= end || *v != '"')
						return -1;
					ve = scan_string(v, end, &escaped);
					if (!ve || escaped)
						return -1;
					n = (size_t)(ve - v) - 2;
					if (n == 0 || n >= outlen)
						return -1;
					memcpy(out, v + 1, n);
					out[n] = '\0';
					found = 1;
					e = ve;
				} else {
					e = q + 1;
				}
				expect_key = 0;
			}
			p = e;
			continue;
		}
		if (c == '{' || c == '[') {
			if (++depth > MAX_DEPTH)
				return -1;
			expect_key = c == '{' && depth == 1;
		} else if (c == '}' || c == ']') {
			if (--depth < 0)
				return -1;
			if (depth == 0) {
				p = skip_ws(p + 1, end);
				return p == end ? found : -1;
			}
		} else if (c == ',') {
			expect_key = depth == 1;
		}
		p++;
	}
	return -1;
}

/* --- the exchange -------------------------------------------------------- */

static int connect_agent(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = GLIA_CNI_TIMEOUT_S };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	return put_all(fd, p, n, 1);
}

static int send_request(int fd, const struct buf *in)
{
	struct buf body = { 0 };
	char head[256];
	int n, rc = -1;

	for (char **e = environ; *e; e++)
		if (!strncmp(*e, GLIA_CNI_ENV_PREFIX, strlen(GLIA_CNI_ENV_PREFIX)) &&
		    buf_add(&body, *e, strlen(*e) + 1) < 0)
			goto out;
	if (buf_add(&body, "", 1) < 0 || (in->len && buf_add(&body, in->p, in->len) < 0))
		goto out;
	n = snprintf(head, sizeof(head),
		     GLIA_CNI_EXEC_REQUEST_LINE "Host: glia\r\n"
		     "Content-Type: application/octet-stream\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		     body.len);
	if (n < 0 || (size_t)n >= sizeof(head))
		goto out;
	rc = send_all(fd, head, (size_t)n) || send_all(fd, body.p, body.len) ? -1 : 0;
out:
	free(body.p);
	return rc;
}

static int recv_all(int fd, struct buf *ans)
{
	char chunk[65536];

	for (;;) {
		ssize_t r = read(fd, chunk, sizeof(chunk));

		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1; /* EAGAIN: the timeout */
		}
		if (buf_add(ans, chunk, (size_t)r) < 0)
			return -1;
	}
}

/* The value of header `name` in head[0..len) as a number, or -1. */
static long header_value(const char *head, size_t len, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = head; p < head + len;) {
		const char *eol = memmem(p, (size_t)(head + len - p), "\r\n", 2);

		if (!eol)
			eol = head + len;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			char *endp;
			long v;

			errno = 0;
			v = strtol(p + nl + 1, &endp, 10);
			while (endp < eol && (*endp == ' ' || *endp == '\t'))
				endp++;
			return errno || endp != eol || v < 0 ? -1 : v;
		}
		p = eol + 2;
	}
	return -1;
}

int main(int argc, char **argv)
{
	const char *cmd = getenv("CNI_COMMAND");
	static char empty[1];
	struct buf in = { 0 }, ans = { 0 };
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *hend;
	long code, outlen, clen;
	size_t hlen, blen;
	int fd;

	self_path = argc > 0 ? argv[0] : NULL;
	if (cmd && !strcmp(cmd, "VERSION")) {
		/* No configuration, no agent: what the Python plugin prints. */
		return write_all(1, GLIA_CNI_VERSION_OUTPUT, strlen(GLIA_CNI_VERSION_OUTPUT)) ? 1 : 0;
	}
	if (!cmd || !*cmd)
		fallback(NULL, "no CNI_COMMAND");
	if (read_stdin(&in) < 0)
		fallback(&in, "stdin unreadable or over %d bytes", GLIA_CNI_MAX_INPUT);
	if (!in.p)
		in.p = empty;
	switch (find_agent_socket(in.p, in.p + in.len, sock, sizeof(sock))) {
	case 0:
		strcpy(sock, GLIA_CNI_DEFAULT_SOCKET);
		break;
	case 1:
		break;
	default:
		fallback(&in, "agentSocket not read with certainty");
	}
	fd = connect_agent(sock);
	if (fd < 0)
		fallback(&in, "connect %s: %s", sock, strerror(errno));
	if (send_request(fd, &in) < 0 || recv_all(fd, &ans) < 0)
		fallback(&in, "exchange with %s: %s", sock, strerror(errno));
	close(fd);

	hend = ans.p ? memmem(ans.p, ans.len, "\r\n\r\n", 4) : NULL;
	if (!hend || ans.len < 13 || memcmp(ans.p, "HTTP/1.1 200 ", 13))
		fallback(&in, "the agent did not run it (%.40s)", ans.p ? ans.p : "no answer");
	hlen = (size_t)(hend - ans.p) + 2; /* through the last header's CRLF */
	blen = ans.len - (hlen + 2);
	code = header_value(ans.p, hlen, GLIA_CNI_EXIT_HEADER);
	outlen = header_value(ans.p, hlen, GLIA_CNI_STDOUT_HEADER);
	clen = header_value(ans.p, hlen, "Content-Length");
	if (code < 0 || code > 255 || outlen < 0 || clen < 0 || (size_t)clen != blen ||
	    (size_t)outlen > blen)
		fallback(&in, "incomplete answer from the agent");
	write_all(1, hend + 4, (size_t)outlen);
	write_all(2, hend + 4 + outlen, blen - (size_t)outlen);
	return (int)code;
}

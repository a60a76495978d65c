/* A small HTTP server for bench/datapath.py: one process, one thread, epoll, no fork.
 *
 *     datapath_server PORT BIG_BYTES [CPU]
 *
 * Listens on [::]:PORT (IPv4 and IPv6). Any request for /big gets BIG_BYTES zero bytes,
 * sent with sendfile(2) from a 1 MiB in-memory file, again and again (it stays in the CPU
 * cache); any other request gets a tiny body. Honours "Connection: close" (answers, then
 * closes); otherwise keeps the connection open (HTTP/1.1).
 * With CPU given, the process pins itself to that CPU. Built by the benchmark with
 * `gcc -O2 -static` and run inside the sandbox's container; it only serves, never connects.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
#define REQUEST_MAX 4096
#ifndef FILE_BYTES
#define FILE_BYTES (1L << 20) /* the in-memory file /big is sent from, over and over */
#endif
#define SMALL_BODY "ok\n"

struct conn {
    char request[REQUEST_MAX];
    size_t have;          /* bytes of request read */
    char head[256];       /* response header (and the small body) still to write */
    size_t head_len, head_done;
    long long body_left;  /* bytes of /big still to send */
    int close_after;      /* "Connection: close" was asked for */
    int sending;
    int watching_out;     /* registered for EPOLLOUT rather than EPOLLIN */
};

static struct conn *conns[MAX_FDS];
static int epoll_fd, big_fd;
static long long big_bytes;

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void drop(int fd) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

static void watch(int fd, int op, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epoll_fd, op, fd, &ev) != 0) fail("epoll_ctl");
}

/* Is there a header line "Connection: close" in the request head? */
static int asks_close(const char *head) {
    const char *line = strstr(head, "\r\n");
    while (line != NULL && line[2] != '\r') {
        line += 2;
        if (strncasecmp(line, "connection:", 11) == 0) {
            const char *value = line + 11;
            while (*value == ' ' || *value == '\t') value++;
            if (strncasecmp(value, "close", 5) == 0) return 1;
        }
        line = strstr(line, "\r\n");
    }
    return 0;
}

/* A full request head is in c->request (ends at end, "\r\n\r\n" included): set up the answer. */
static void answer(struct conn *c, size_t end) {
    char saved = c->request[end];
    c->request[end] = '\0';
    int big = strncmp(c->request, "GET /big", 8) == 0 &&
              (c->request[8] == ' ' || c->request[8] == '?');
    const char *first_end = strstr(c->request, "\r\n");
    int http10 = first_end - c->request >= 8 && strncmp(first_end - 8, "HTTP/1.0", 8) == 0;
    c->close_after = http10 || asks_close(c->request);
    c->request[end] = saved;
    const char *connection = c->close_after ? "close" : "keep-alive";
    int n;
    if (big) {
        n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\nConnection: %s\r\n\r\n",
                     big_bytes, connection);
        c->body_left = big_bytes;
    } else {
        n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n%s",
                     strlen(SMALL_BODY), connection, SMALL_BODY);
        c->body_left = 0;
    }
    c->head_len = (size_t)n;
    c->head_done = 0;
    /* Keep what came after this request (a pipelined one) for later. */
    memmove(c->request, c->request + end, c->have - end);
    c->have -= end;
    c->sending = 1;
}

/* Write what is due; 1 when the answer is complete, 0 when the socket is full, -1 on error. */
static int send_some(int fd, struct conn *c) {
    while (c->head_done < c->head_len) {
        ssize_t n = write(fd, c->head + c->head_done, c->head_len - c->head_done);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->head_done += (size_t)n;
    }
    while (c->body_left > 0) {
        off_t offset = (off_t)((big_bytes - c->body_left) % FILE_BYTES);
        long long chunk = FILE_BYTES - offset;
        if (chunk > c->body_left) chunk = c->body_left;
        ssize_t n = sendfile(fd, big_fd, &offset, (size_t)chunk);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        if (n == 0) return -1;
        c->body_left -= n;
    }
    return 1;
}

static char *head_end(struct conn *c) {
    c->request[c->have] = '\0';
    return strstr(c->request, "\r\n\r\n");
}

/* Serve fd until it would block; returns when done with this event. */
static void serve(int fd) {
    struct conn *c = conns[fd];
    for (;;) {
        if (c->sending) {
            int done = send_some(fd, c);
            if (done < 0) {
                drop(fd);
                return;
            }
            if (done == 0) {
                if (!c->watching_out) watch(fd, EPOLL_CTL_MOD, EPOLLOUT);
                c->watching_out = 1;
                return;
            }
            c->sending = 0;
            if (c->close_after) {
                drop(fd);
                return;
            }
            if (c->watching_out) watch(fd, EPOLL_CTL_MOD, EPOLLIN);
            c->watching_out = 0;
        }
        char *end = head_end(c);
        if (end != NULL) {
            answer(c, (size_t)(end - c->request) + 4);
            continue;
        }
        if (c->have >= REQUEST_MAX - 1) {
            drop(fd);
            return;
        }
        ssize_t n = read(fd, c->request + c->have, REQUEST_MAX - 1 - c->have);
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            drop(fd);
            return;
        }
        c->have += (size_t)n;
    }
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == ECONNABORTED || errno == EINTR) return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) return;
            fail("accept4");
        }
        if (fd >= MAX_FDS) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[fd] = calloc(1, sizeof(struct conn));
        if (conns[fd] == NULL) fail("calloc");
        watch(fd, EPOLL_CTL_ADD, EPOLLIN);
        serve(fd); /* the request is usually there already */
    }
}

static int make_big_file(void) {
    int fd = memfd_create("big", 0);
    if (fd < 0) fail("memfd_create");
    static char zeros[1 << 20];
    for (long done = 0; done < FILE_BYTES; done += (long)sizeof zeros)
        if (write(fd, zeros, sizeof zeros) != (ssize_t)sizeof zeros) fail("write memfd");
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT BIG_BYTES [CPU]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    big_bytes = atoll(argv[2]);
    if (port <= 0 || port > 65535 || big_bytes <= 0) {
        fprintf(stderr, "bad PORT or BIG_BYTES\n");
        return 2;
    }
    if (argc > 3) {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(atoi(argv[3]), &cpus);
        if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) fail("sched_setaffinity");
    }
    signal(SIGPIPE, SIG_IGN);
    big_fd = make_big_file();

    int listener = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) fail("socket");
    int one = 1, zero = 0;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                .sin6_addr = IN6ADDR_ANY_INIT};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0) fail("bind");
    if (listen(listener, 4096) != 0) fail("listen");

    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) fail("epoll_create1");
    watch(listener, EPOLL_CTL_ADD, EPOLLIN);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epoll_fd, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener)
                accept_all(listener);
            else if (conns[fd] != NULL)
                serve(fd);
        }
    }
}

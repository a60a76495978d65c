/* Bulk throughput of one TCP connection, for bench/datapath.py.
 *
 *     datapath_client SOURCE DESTINATION PORT WARMUP SECONDS [CPU]
 *
 * Binds SOURCE (an IPv6 or IPv4 address), connects to DESTINATION:PORT, asks for /big
 * (datapath_server sends zeros for as long as the connection lives) and reads with a
 * 256 KiB buffer (small enough to stay in the CPU cache). The first WARMUP seconds (TCP slow
 * start, the first page faults) are not counted; then it counts bytes for SECONDS and prints
 * {"bytes": N, "seconds": S}. With CPU given, the process pins itself to that CPU. Every wait
 * is bounded (5 s per read).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef BUFFER_BYTES
#define BUFFER_BYTES (256 << 10)
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int fill(const char *text, int port, struct sockaddr_storage *out, socklen_t *len) {
    memset(out, 0, sizeof *out);
    struct sockaddr_in6 *six = (struct sockaddr_in6 *)out;
    struct sockaddr_in *four = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET6, text, &six->sin6_addr) == 1) {
        six->sin6_family = AF_INET6;
        six->sin6_port = htons((uint16_t)port);
        *len = sizeof *six;
        return AF_INET6;
    }
    if (inet_pton(AF_INET, text, &four->sin_addr) == 1) {
        four->sin_family = AF_INET;
        four->sin_port = htons((uint16_t)port);
        *len = sizeof *four;
        return AF_INET;
    }
    fprintf(stderr, "not an address: %s\n", text);
    exit(2);
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s SOURCE DESTINATION PORT WARMUP SECONDS [CPU]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[3]);
    double warmup = atof(argv[4]), seconds = atof(argv[5]);
    if (port <= 0 || port > 65535 || warmup < 0 || seconds <= 0 || seconds > 3600) {
        fprintf(stderr, "bad PORT, WARMUP or SECONDS\n");
        return 2;
    }
    if (argc > 6) {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(atoi(argv[6]), &cpus);
        if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) fail("sched_setaffinity");
    }
    struct sockaddr_storage source, destination;
    socklen_t source_len, destination_len;
    int family = fill(argv[1], 0, &source, &source_len);
    if (fill(argv[2], port, &destination, &destination_len) != family) {
        fprintf(stderr, "SOURCE and DESTINATION are of different families\n");
        return 2;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket");
    struct timeval limit = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    if (bind(fd, (struct sockaddr *)&source, source_len) != 0) fail("bind");
    if (connect(fd, (struct sockaddr *)&destination, destination_len) != 0) fail("connect");
    const char request[] = "GET /big HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    if (write(fd, request, sizeof request - 1) != (ssize_t)(sizeof request - 1)) fail("write");

    static char buffer[BUFFER_BYTES];
    double start = now(), counting_from = start + warmup, end = counting_from + seconds;
    long long counted = 0;
    int counting = 0;
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("read");
        if (n == 0) {
            fprintf(stderr, "the server closed the connection early\n");
            return 1;
        }
        double t = now();
        if (!counting && t >= counting_from) {
            counting = 1;
            counting_from = t; /* count from the end of the first read past the warm-up */
            end = t + seconds;
            continue;
        }
        if (counting) {
            counted += n;
            if (t >= end) {
                printf("{\"bytes\": %lld, \"seconds\": %.6f}\n", counted, t - counting_from);
                close(fd);
                return 0;
            }
        }
    }
}

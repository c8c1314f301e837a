/*
 * udp_echo.c - reference UDP echo server for the sockit benchmarks.
 *
 * Minimal, single-threaded, blocking recvfrom/sendto loop with a 65 536-byte
 * buffer. Every datagram is sent back to its sender unchanged.
 *
 *   usage: udp_echo PORT          (binds 127.0.0.1:PORT)
 *
 * Build: cc -O2 -o bench/out/udp_echo bench/c/udp_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536

static char buf[BUF_SIZE];

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "udp_echo: invalid port '%s'\n", argv[1]);
        return 2;
    }

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("bind");
        return 1;
    }
    fprintf(stderr, "listening on 127.0.0.1:%ld (udp)\n", port);

    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* e.g. ECONNREFUSED from an earlier ICMP error: keep serving */
            continue;
        }
        for (;;) {
            ssize_t w = sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen);
            if (w < 0 && errno == EINTR)
                continue;
            /* Other send errors (ENOBUFS, peer gone): drop the datagram, as UDP may. */
            break;
        }
    }
}

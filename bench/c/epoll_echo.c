/*
 * epoll_echo.c - reference TCP echo server for the sockit benchmarks.
 *
 * Minimal, single-threaded, non-blocking, level-triggered epoll echo server.
 *
 *   usage: epoll_echo PORT        (binds 127.0.0.1:PORT)
 *
 * - listen backlog 4096, SO_REUSEADDR, TCP_NODELAY on accepted sockets
 * - RLIMIT_NOFILE soft limit raised to the hard limit at start
 * - one shared 64 KiB read buffer; bytes that could not be written at once
 *   (EAGAIN / partial write) are kept in a per-connection pending buffer.
 *   While a connection has pending output it is not read from (EPOLLOUT only),
 *   so pending output per connection is bounded by 64 KiB and nothing is lost.
 * - on EMFILE/ENFILE a reserved descriptor is released to accept-and-close the
 *   connection, so the level-triggered listener cannot spin.
 *
 * Build: cc -O2 -o bench/out/epoll_echo bench/c/epoll_echo.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define BACKLOG 4096
#define MAX_EVENTS 1024

struct conn {
    char *pend;      /* pending output (allocated lazily, BUF_SIZE bytes) */
    size_t off;      /* first unsent byte in pend */
    size_t len;      /* end of pending data in pend */
    int open;
};

static struct conn *conns;   /* indexed by fd */
static size_t nconns;
static int epfd;
static int reserve_fd = -1;
static char buf[BUF_SIZE];

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int ensure_slot(int fd)
{
    if ((size_t)fd < nconns)
        return 0;
    size_t n = nconns ? nconns : 1024;
    while (n <= (size_t)fd)
        n *= 2;
    struct conn *c = realloc(conns, n * sizeof(*c));
    if (!c)
        return -1;
    memset(c + nconns, 0, (n - nconns) * sizeof(*c));
    conns = c;
    nconns = n;
    return 0;
}

static void close_conn(int fd)
{
    struct conn *c = &conns[fd];
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(c->pend);
    memset(c, 0, sizeof(*c));
}

static int set_interest(int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

/* Write data; keep what could not be written. Returns -1 if the connection
 * must be closed, 0 otherwise. */
static int send_or_queue(int fd, const char *data, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, data + done, n - done, MSG_NOSIGNAL);
        if (w > 0) {
            done += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return -1;
        }
    }
    if (done == n)
        return 0;

    struct conn *c = &conns[fd];
    if (!c->pend && !(c->pend = malloc(BUF_SIZE)))
        return -1;
    /* Only called when nothing is pending, and n <= BUF_SIZE. */
    memcpy(c->pend, data + done, n - done);
    c->off = 0;
    c->len = n - done;
    /* Stop reading until the pending output has been flushed. */
    if (set_interest(fd, EPOLLOUT) < 0)
        return -1;
    return 0;
}

static void on_readable(int fd)
{
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
        if (send_or_queue(fd, buf, (size_t)n) < 0)
            close_conn(fd);
    } else if (n == 0) {
        /* EOF; nothing is pending (we do not read while output is pending). */
        close_conn(fd);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        close_conn(fd);
    }
}

static void on_writable(int fd)
{
    struct conn *c = &conns[fd];
    while (c->off < c->len) {
        ssize_t w = send(fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w > 0) {
            c->off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* still pending; wait for the next EPOLLOUT */
        } else {
            close_conn(fd);
            return;
        }
    }
    c->off = c->len = 0;
    if (set_interest(fd, EPOLLIN) < 0)
        close_conn(fd);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: accept and drop one connection using the
                 * reserved descriptor, so the listener does not stay readable
                 * forever. */
                static int warned;
                if (!warned) {
                    fprintf(stderr, "epoll_echo: out of file descriptors, dropping connections\n");
                    warned = 1;
                }
                if (reserve_fd >= 0) {
                    close(reserve_fd);
                    int x = accept(lfd, NULL, NULL);
                    if (x >= 0)
                        close(x);
                    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                return;
            }
            /* EAGAIN: accept queue drained; anything else: retry on next event */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (ensure_slot(fd) < 0) {
            close(fd);
            continue;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        conns[fd].open = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "epoll_echo: invalid port '%s'\n", argv[1]);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            perror("setrlimit(RLIMIT_NOFILE)");
    }

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        die("setsockopt(SO_REUSEADDR)");
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("bind");
    if (listen(lfd, BACKLOG) < 0)
        die("listen");

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    struct epoll_event lev = { .events = EPOLLIN, .data.fd = lfd };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl(listener)");
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    fprintf(stderr, "listening on 127.0.0.1:%ld\n", port);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        int accept_ready = 0;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            uint32_t e = events[i].events;
            if (fd == lfd) {
                accept_ready = 1;
                continue;
            }
            /* The fd may have been closed by an earlier event in this batch.
             * Accepting is deferred to after the batch, so a closed fd number
             * cannot be reused by a new connection while stale events for it
             * are still being processed. */
            if ((size_t)fd >= nconns || !conns[fd].open)
                continue;
            if (e & EPOLLERR) {
                close_conn(fd);
                continue;
            }
            if (conns[fd].len > conns[fd].off) {
                /* Pending output: interest is EPOLLOUT (or HUP). Try to flush;
                 * a hung-up peer makes send fail and the connection close. */
                if (e & (EPOLLOUT | EPOLLHUP))
                    on_writable(fd);
            } else if (e & (EPOLLIN | EPOLLHUP)) {
                on_readable(fd);
            }
        }
        if (accept_ready)
            on_accept(lfd);
    }
}

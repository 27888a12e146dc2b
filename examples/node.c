/* A piper node in C (POSIX and Linux only), for piper-launch.
 *
 * Build: cc -O2 -Wall -o target/node-c examples/node.c
 * Run it from a topology file (examples/polyglot.toml). Like node.py, it
 * takes everything from the environment the launcher sets: its socket as
 * fd 3 (LISTEN_FDS, LISTEN_PID), else it binds $PIPER_DIR/piper-$PIPER_NAME
 * itself; PIPER_NAME and PIPER_NEXT, the node it answers (a ring);
 * NOTIFY_SOCKET, where it says READY=1 and its counts (STATUS=received N,
 * sent N, dropped N, at most once a second and as it stops); and
 * PIPER_INTERVAL, milliseconds to wait before each reply.
 *
 * For each datagram it prints the seed's line, NAME received: 'PAYLOAD'
 * (bytes outside printable ASCII as \xNN), then sends its name to
 * PIPER_NEXT. SIGTERM, SIGINT and SIGHUP end it cleanly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

/* An AF_UNIX address for PATH ("@name" is abstract); its length. */
static socklen_t address(struct sockaddr_un *addr, const char *path) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof addr->sun_path)
        return 0;
    memcpy(addr->sun_path, path, len);
    if (path[0] == '@')
        addr->sun_path[0] = '\0';
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
}

static void notify(const char *message) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr;
    socklen_t len;
    if (!path || !*path || !(len = address(&addr, path)))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, message, strlen(message), 0, (struct sockaddr *)&addr, len) < 0)
        fprintf(stderr, "cannot notify: %s\n", strerror(errno));
    close(fd);
}

static unsigned long received, sent, dropped;

static void report(void) {
    char status[128];
    snprintf(status, sizeof status, "STATUS=received %lu, sent %lu, dropped %lu", received, sent, dropped);
    notify(status);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void) {
    const char *name = getenv("PIPER_NAME"), *next = getenv("PIPER_NEXT"), *dir = getenv("PIPER_DIR");
    const char *interval = getenv("PIPER_INTERVAL");
    if (!name || !next || !dir) {
        fprintf(stderr, "node-c: run me from piper-launch (PIPER_NAME, PIPER_NEXT, PIPER_DIR)\n");
        return 2;
    }
    long pause_ms = interval ? atol(interval) : 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_stop; /* no SA_RESTART: a signal ends the wait in recv */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0); /* one whole line per write */

    char path[sizeof ((struct sockaddr_un *)0)->sun_path], peer_path[sizeof path];
    snprintf(path, sizeof path, "%s/piper-%s", dir, name);
    snprintf(peer_path, sizeof peer_path, "%s/piper-%s", dir, next);
    struct sockaddr_un me, peer;
    socklen_t me_len = address(&me, path), peer_len = address(&peer, peer_path);
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    int held = pid && fds && atol(pid) == (long)getpid() && atoi(fds) >= 1;
    int fd = 3;
    if (!held) {
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || !me_len || bind(fd, (struct sockaddr *)&me, me_len) < 0) {
            fprintf(stderr, "node-c: cannot bind %s: %s\n", path, strerror(errno));
            return 4;
        }
    }
    report();
    notify("READY=1");
    double reported = now();
    char buf[65536];
    while (!stopping) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "node-c: recv: %s\n", strerror(errno));
            break;
        }
        received++;
        printf("%s received: '", name);
        for (ssize_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c == '\\')
                fputs("\\\\", stdout);
            else if (c >= 0x20 && c < 0x7f)
                putchar(c);
            else
                printf("\\x%02x", c);
        }
        printf("'\n");
        if (pause_ms > 0) {
            struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (sendto(fd, name, strlen(name), 0, (struct sockaddr *)&peer, peer_len) < 0) {
            dropped++;
            fprintf(stderr, "node-c: cannot send to %s: %s\n", next, strerror(errno));
        } else {
            sent++;
        }
        if (now() - reported >= 1.0) {
            reported = now();
            report();
        }
    }
    report();
    notify("STOPPING=1");
    if (!held)
        unlink(path);
    return 0;
}

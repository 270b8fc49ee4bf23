/* Supervisor that runs INSIDE the sandbox as its pid 1; C twin of inner.py (same argv, same
 * report), compiled by the service at start-up when a C compiler exists, because a Python
 * supervisor costs an interpreter start-up per run.
 *
 * It forks the program with resource limits set, waits with a wall deadline, measures CPU
 * time and peak RSS from wait4's rusage (bubblewrap's outer process cannot see them), kills
 * everything the program left, writes an optional artifact file raw to --artifact-fd and one
 * JSON report to --report-fd. As pid 1 of the pid namespace it cannot be signalled by the
 * program, and it is non-dumpable so the program cannot ptrace it or open its fds via /proc.
 *
 * usage: supervisor --report-fd N --artifact-fd N --cpu S --wall S --as B --nproc N
 *        --fsize B --nofile N --pid-ns 0|1 --artifact PATH --artifact-max B -- PROGRAM ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct opts {
    int report_fd, artifact_fd, pid_ns;
    double cpu, wall;
    long long as_bytes, nproc, fsize, nofile, artifact_max;
    const char *artifact;
    char **argv;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse(int argc, char **argv, struct opts *o) {
    memset(o, 0, sizeof *o);
    o->artifact_fd = -1;
    o->artifact = "";
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--")) {
            o->argv = argv + i + 1;
            return i + 1 < argc ? 0 : -1;
        }
        if (i + 1 >= argc) return -1;
        const char *v = argv[++i];
        if (!strcmp(k, "--report-fd")) o->report_fd = atoi(v);
        else if (!strcmp(k, "--artifact-fd")) o->artifact_fd = atoi(v);
        else if (!strcmp(k, "--cpu")) o->cpu = atof(v);
        else if (!strcmp(k, "--wall")) o->wall = atof(v);
        else if (!strcmp(k, "--as")) o->as_bytes = atoll(v);
        else if (!strcmp(k, "--nproc")) o->nproc = atoll(v);
        else if (!strcmp(k, "--fsize")) o->fsize = atoll(v);
        else if (!strcmp(k, "--nofile")) o->nofile = atoll(v);
        else if (!strcmp(k, "--pid-ns")) o->pid_ns = atoi(v);
        else if (!strcmp(k, "--artifact")) o->artifact = v;
        else if (!strcmp(k, "--artifact-max")) o->artifact_max = atoll(v);
        else return -1;
    }
    return -1;
}

static void limit(int res, rlim_t soft, rlim_t hard) {
    struct rlimit r = {soft, hard};
    if (setrlimit(res, &r) != 0) _exit(126);
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* In the forked child: limits, then exec. Never returns. */
static void child(const struct opts *o, int err_w) {
    if (!o->pid_ns) setsid(); /* without a pid namespace the process group is what we kill */
    rlim_t cpu = (rlim_t)o->cpu;
    limit(RLIMIT_CPU, cpu, cpu + 1);
    limit(RLIMIT_NPROC, o->nproc, o->nproc);
    limit(RLIMIT_FSIZE, o->fsize, o->fsize);
    limit(RLIMIT_NOFILE, o->nofile, o->nofile);
    limit(RLIMIT_CORE, 0, 0);
    if (o->as_bytes > 0) {
        limit(RLIMIT_AS, o->as_bytes, o->as_bytes);
        limit(RLIMIT_STACK, o->as_bytes, o->as_bytes);
    }
    execv(o->argv[0], o->argv);
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s: %s", o->argv[0], strerror(errno));
    write_all(err_w, msg, n > 0 ? (size_t)n : 0);
    _exit(127);
}

/* Waits for pid until the deadline; returns 1 on timeout, 0 when it has exited. */
static int wait_deadline(pid_t pid, double deadline) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        /* WNOWAIT: leave it for wait4, which collects the rusage. */
        if (waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) {
            if (pidfd >= 0) close(pidfd);
            return 0;
        }
        double left = deadline - now();
        if (left <= 0) {
            if (pidfd >= 0) close(pidfd);
            return 1;
        }
        if (pidfd >= 0) {
            struct pollfd p = {pidfd, POLLIN, 0};
            poll(&p, 1, (int)(left * 1000) + 1);
        } else {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
}

static void kill_all(pid_t pid, int pid_ns) {
    if (pid_ns) kill(-1, SIGKILL); /* from pid 1: every other process of the namespace */
    else killpg(pid, SIGKILL);
}

static void close_range_(unsigned lo, unsigned hi) {
    if (lo > hi) return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, lo, hi, 0) == 0) return;
#endif
    for (unsigned fd = lo; fd <= hi && fd < 4096; fd++) close((int)fd);
}

/* Closes every fd from 3 up except the two given (either may be -1). */
static void close_others(int a, int b) {
    int lo = a < b ? a : b, hi = a < b ? b : a;
    unsigned from = 3;
    int keep[2] = {lo, hi};
    for (int i = 0; i < 2; i++) {
        if (keep[i] < 3) continue;
        close_range_(from, (unsigned)keep[i] - 1);
        from = (unsigned)keep[i] + 1;
    }
    close_range_(from, ~0U);
}

static long long send_artifact(const struct opts *o) {
    struct stat st;
    if (o->artifact_fd < 0 || !o->artifact[0] || stat(o->artifact, &st) != 0) return -1;
    if (st.st_size > o->artifact_max) return -1;
    int fd = open(o->artifact, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[65536];
    long long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        write_all(o->artifact_fd, buf, (size_t)n);
        total += n;
    }
    close(fd);
    return total;
}

int main(int argc, char **argv) {
    struct opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "supervisor: bad arguments\n");
        return 2;
    }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    close_others(o.report_fd, o.artifact_fd); /* fds bubblewrap was handed stay out */
    int errp[2];
    if (pipe2(errp, O_CLOEXEC) != 0) return 3; /* EOF without data: exec succeeded */
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) return 4;
    if (pid == 0) {
        close(errp[0]);
        close(o.report_fd);
        if (o.artifact_fd >= 0) close(o.artifact_fd);
        child(&o, errp[1]);
    }
    close(errp[1]);
    int timed_out = wait_deadline(pid, t0 + o.wall);
    kill_all(pid, o.pid_ns);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    double wall = now() - t0;
    char err[600];
    ssize_t en = read(errp[0], err, sizeof err - 1);
    err[en > 0 ? en : 0] = 0;
    for (char *c = err; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 32) *c = ' ';
    long long artifact = -1;
    int exited = WIFEXITED(status);
    if (exited && WEXITSTATUS(status) == 0 && !timed_out) artifact = send_artifact(&o);
    if (o.artifact_fd >= 0) close(o.artifact_fd);
    char rep[1024], ec[16] = "null", sg[16] = "null", ex[640] = "null";
    if (exited) snprintf(ec, sizeof ec, "%d", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) snprintf(sg, sizeof sg, "%d", WTERMSIG(status));
    if (en > 0) snprintf(ex, sizeof ex, "\"%s\"", err);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    int n = snprintf(rep, sizeof rep,
                     "{\"exit_code\": %s, \"signal\": %s, \"cpu_s\": %.6f, \"wall_s\": %.6f, "
                     "\"maxrss_kb\": %ld, \"wall_timeout\": %s, \"exec_error\": %s, "
                     "\"artifact_bytes\": %lld}",
                     ec, sg, cpu, wall, ru.ru_maxrss, timed_out ? "true" : "false", ex, artifact);
    write_all(o.report_fd, rep, (size_t)n);
    close(o.report_fd);
    return 0;
}

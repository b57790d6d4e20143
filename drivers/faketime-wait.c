/* faketime-wait.so: select(2) and nanosleep(2) scaled by libfaketime's rate.
 *
 * Sendmail's event timer (its interval queue runs, -q15m) sleeps in select/nanosleep from
 * signal-handler context, where libfaketime 0.9.10 performs the wait unscaled: at x100 a
 * 15-minute queue interval then takes 15 real minutes. Preloaded before libfaketime, these
 * two wrappers divide the timeout by the rate N of FAKETIME="... xN" and issue the system call
 * directly; without a rate (the real clock) they wait as asked. Built by .ci/install-deps.sh
 * into /opt/mxlab/lib/faketime-wait.so; loaded by drivers/sendmail.toml's [env] LD_PRELOAD. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The rate of FAKETIME="+0 xN", or 1 when there is none. Read each call: getenv, strchr and
 * strtod are async-signal-safe in practice and allocate nothing. */
static double read_rate(void)
{
    const char *spec = getenv("FAKETIME");
    const char *x = spec ? strchr(spec, 'x') : NULL;
    double rate = x ? strtod(x + 1, NULL) : 1.0;
    return rate > 0.0 ? rate : 1.0;
}

static void scale(long long *sec, long long *nsec, double rate)
{
    double total = ((double)*sec * 1e9 + (double)*nsec) / rate;
    *sec = (long long)(total / 1e9);
    *nsec = (long long)(total - (double)*sec * 1e9);
}

int select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
           struct timeval *timeout)
{
    struct timeval scaled;
    struct timeval *wait = timeout;
    if (timeout != NULL) {
        long long sec = timeout->tv_sec, nsec = (long long)timeout->tv_usec * 1000;
        scale(&sec, &nsec, read_rate());
        scaled.tv_sec = sec;
        scaled.tv_usec = nsec / 1000;
        wait = &scaled;
    }
    return (int)syscall(SYS_select, nfds, readfds, writefds, exceptfds, wait);
}

int nanosleep(const struct timespec *req, struct timespec *rem)
{
    struct timespec scaled = *req;
    long long sec = req->tv_sec, nsec = req->tv_nsec;
    scale(&sec, &nsec, read_rate());
    scaled.tv_sec = sec;
    scaled.tv_nsec = nsec;
    return (int)syscall(SYS_nanosleep, &scaled, rem);
}

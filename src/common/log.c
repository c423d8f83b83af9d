/* Process-wide logger: one mutex-protected line per call so threads never interleave. */
#include "cairn/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

static struct {
    pthread_mutex_t mu;
    enum cairn_log_level min;
    int json;
    FILE *out;
    int journal; /* stderr_is_journal(), -1 until looked at */
} g_log = {PTHREAD_MUTEX_INITIALIZER, CAIRN_LOG_WARN, 0, NULL, -1};

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};
/* syslog priorities of the levels (debug 7, info 6, warning 4, err 3). */
static const int level_prio[] = {7, 6, 4, 3, 3};

/* Is stderr the journal's stream (systemd sets JOURNAL_STREAM to its "device:inode")? Then
 * plain lines start with "<N>", the priority journald reads (SyslogLevelPrefix=). */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev = 0, ino = 0;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void cairn_log_setup(enum cairn_log_level min, int json, FILE *out)
{
    pthread_mutex_lock(&g_log.mu);
    __atomic_store_n(&g_log.min, min, __ATOMIC_RELAXED); /* read without the lock */
    g_log.json = json;
    g_log.out = out;
    pthread_mutex_unlock(&g_log.mu);
}

int cairn_log_level_parse(const char *s)
{
    for (int i = 0; i <= CAIRN_LOG_OFF; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return CAIRN_LOG_WARN;
    return -1;
}

int cairn_log_enabled(enum cairn_log_level level)
{
    /* Atomic: cairnd sets the level again on a reload while other threads log. */
    return level >= __atomic_load_n(&g_log.min, __ATOMIC_RELAXED) && level < CAIRN_LOG_OFF;
}

void cairn_log(enum cairn_log_level level, const char *component, const char *fmt, ...)
{
    if (!cairn_log_enabled(level))
        return;
    char raw[4096], msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    /* Plain lines: one line per call whatever peer text the message holds (no forged lines,
     * no terminal control). JSON escapes controls itself but needs valid UTF-8 (else
     * json_pack fails and the line is lost): the raw text when valid, else the escaped. */
    str_escape(msg, sizeof(msg), raw, strlen(raw));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    pthread_mutex_lock(&g_log.mu);
    FILE *out = g_log.out ? g_log.out : stderr;
    if (g_log.json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", when, "level", level_names[level],
                              "component", component ? component : "cairn", "msg", raw);
        if (o == NULL)
            o = json_pack("{s:s, s:s, s:s, s:s}", "ts", when, "level", level_names[level],
                          "component", component ? component : "cairn", "msg", msg);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line != NULL)
            fprintf(out, "%s\n", line);
        free(line);
        json_decref(o);
    } else if (out == stderr &&
               (g_log.journal >= 0 ? g_log.journal : (g_log.journal = stderr_is_journal()))) {
        /* journald stamps lines itself */
        fprintf(out, "<%d>%-5s %s: %s\n", level_prio[level], level_names[level],
                component ? component : "cairn", msg);
    } else {
        fprintf(out, "%s %-5s %s: %s\n", when, level_names[level], component ? component : "cairn",
                msg);
    }
    fflush(out);
    pthread_mutex_unlock(&g_log.mu);
}

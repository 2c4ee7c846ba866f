/* Host POSIX port: runs the portable core on a pseudo-terminal with simulated sensors, so the
 * host driver can be developed and tested without a gripper.
 *
 *   gripper-host [--path-file F] [--link L] [--control FIFO] [--rate HZ] [--drift-ppm P]
 *                [--jitter-us J] [--jaw-period S] [--at T:CMD]... [--unplug-after S]
 *                [--unplug-exit] [--protocol-version N] [--serial N] [--seed N] [--imu-noise LSB]
 *                [--imu-trace FILE]
 *
 * stdout: the pty slave path (again after every simulated re-plug), then "epoch_ns=<n>" once: the
 * CLOCK_MONOTONIC time at which the device clock read 0, so tests can compute true device times.
 * Commands (control FIFO lines or --at T:CMD): jaw <0..1> | jaw auto | trigger <0|1> |
 * button <i> <0|1> | press <i> [ms] | encoder <0|1> | imu <0|1> | unplug [ms] | reboot [ms] | exit |
 * trace start (play the --imu-trace motion from now; prints "trace_start_us=<device us>" on stdout)
 * (reboot = unplug with power loss: the device clock and sequence numbers restart). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../../core/gripper.h"
#include "../../core/hal.h"
#include "sim.h"

#define MAX_EVENTS 64

typedef struct {
    double at_s;
    char cmd[64];
    int done;
} event_t;

static struct {
    int master, slave;
    char slave_path[256];
    const char *path_file, *link, *control;
    int control_fd;
    int64_t epoch_ns;
    double drift_ppm;
    uint32_t jitter_us;
    int unplug_exit;
    uint64_t replug_at_us; /* nonzero while unplugged */
    int reboot_pending;    /* power-cycle at re-plug: a USB-powered gripper loses power when unplugged */
    event_t events[MAX_EVENTS];
    int n_events;
    uint64_t release_at_us[8];
    char ctl_buf[256];
    size_t ctl_len;
} host;

static volatile sig_atomic_t stop_requested;
static gp_app_t app;
static gp_config_t cfg;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The device crystal runs drift_ppm fast (or slow): device time = elapsed * (1 + ppm/1e6). */
uint64_t hal_time_us(void)
{
    double el = (double)(mono_ns() - host.epoch_ns);
    return (uint64_t)((el + el * host.drift_ppm * 1e-6) / 1000.0);
}

static int64_t device_us_to_mono_ns(uint64_t us)
{
    return host.epoch_ns + (int64_t)((double)us * 1000.0 / (1.0 + host.drift_ppm * 1e-6));
}

void hal_led_set(int on)
{
    (void)on; /* a terminal has no LED; the state is in the core (app.led_mode) */
}

size_t hal_serial_read(uint8_t *buf, size_t cap)
{
    ssize_t n;
    if (host.master < 0) {
        return 0;
    }
    n = read(host.master, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

void hal_serial_write(const uint8_t *buf, size_t n)
{
    /* Like a USB CDC link nobody reads: bytes that do not fit are lost; the host resyncs. */
    if (host.master >= 0) {
        ssize_t w = write(host.master, buf, n);
        (void)w;
    }
}

static void write_atomic(const char *path, const char *text)
{
    char tmp[512];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL) {
        perror("gripper-host: path file");
        return;
    }
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

static int open_link(void)
{
    struct termios tio;
    char line[300];
    if (openpty(&host.master, &host.slave, host.slave_path, NULL, NULL) != 0) {
        perror("gripper-host: openpty");
        return -1;
    }
    /* Raw slave: no echo or newline mangling before the driver has configured it. */
    tcgetattr(host.slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(host.slave, TCSANOW, &tio);
    fcntl(host.master, F_SETFL, fcntl(host.master, F_GETFL) | O_NONBLOCK);
    printf("%s\n", host.slave_path);
    fflush(stdout);
    if (host.path_file) {
        snprintf(line, sizeof line, "%s\n", host.slave_path);
        write_atomic(host.path_file, line);
    }
    if (host.link) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s.tmp", host.link);
        unlink(tmp);
        if (symlink(host.slave_path, tmp) != 0 || rename(tmp, host.link) != 0) {
            perror("gripper-host: link");
        }
    }
    return 0;
}

static void close_link(void)
{
    if (host.master >= 0) {
        close(host.master);
        close(host.slave);
    }
    host.master = host.slave = -1;
}

static void run_command(const char *cmd)
{
    char word[32] = "";
    double a = 0, b = 0;
    int n = sscanf(cmd, "%31s %lf %lf", word, &a, &b);
    uint64_t now = hal_time_us();
    if (n < 1) {
        return;
    }
    if (strcmp(word, "jaw") == 0) {
        if (strstr(cmd, "auto")) {
            sim.jaw_auto = 1;
        } else if (n >= 2) {
            sim.jaw_auto = 0;
            sim.jaw_hold = a < 0 ? 0 : (a > 1 ? 1 : a);
        }
    } else if (strcmp(word, "trigger") == 0 && n >= 2) {
        sim_set_input(0, a != 0);
    } else if (strcmp(word, "button") == 0 && n >= 3 && a >= 0 && a < 7) {
        sim_set_input((int)a + 1, b != 0);
    } else if (strcmp(word, "press") == 0 && n >= 2 && a >= 0 && a < 7) {
        sim_set_input((int)a + 1, 1);
        host.release_at_us[(int)a + 1] = now + (uint64_t)((n >= 3 ? b : 100.0) * 1000.0);
    } else if (strcmp(word, "encoder") == 0 && n >= 2) {
        sim.encoder_ok = a != 0;
    } else if (strcmp(word, "imu") == 0 && n >= 2) {
        sim.imu_ok = a != 0;
    } else if (strcmp(word, "unplug") == 0) {
        close_link();
        if (host.unplug_exit) {
            stop_requested = 1;
        } else {
            host.replug_at_us = now + (uint64_t)((n >= 2 ? a : 500.0) * 1000.0);
        }
    } else if (strcmp(word, "reboot") == 0) {
        close_link();
        host.reboot_pending = 1;
        host.replug_at_us = now + (uint64_t)((n >= 2 ? a : 500.0) * 1000.0);
    } else if (strcmp(word, "trace") == 0 && strstr(cmd, "start") && sim.trace_rows) {
        sim_trace_start();
        printf("trace_start_us=%llu\n", (unsigned long long)sim.trace_start_us);
        fflush(stdout);
    } else if (strcmp(word, "exit") == 0) {
        stop_requested = 1;
    } else {
        fprintf(stderr, "gripper-host: unknown command '%s'\n", cmd);
    }
}

static void poll_control(void)
{
    char buf[128];
    ssize_t n;
    size_t i;
    if (host.control_fd < 0) {
        return;
    }
    while ((n = read(host.control_fd, buf, sizeof buf)) > 0) {
        for (i = 0; i < (size_t)n; i++) {
            if (buf[i] == '\n') {
                host.ctl_buf[host.ctl_len] = '\0';
                run_command(host.ctl_buf);
                host.ctl_len = 0;
            } else if (host.ctl_len < sizeof host.ctl_buf - 1) {
                host.ctl_buf[host.ctl_len++] = buf[i];
            }
        }
    }
}

static void run_due(uint64_t now)
{
    int i;
    for (i = 0; i < host.n_events; i++) {
        if (!host.events[i].done && now >= (uint64_t)(host.events[i].at_s * 1e6)) {
            host.events[i].done = 1;
            run_command(host.events[i].cmd);
        }
    }
    for (i = 0; i < 8; i++) {
        if (host.release_at_us[i] && now >= host.release_at_us[i]) {
            host.release_at_us[i] = 0;
            sim_set_input(i, 0);
        }
    }
    if (host.replug_at_us && now >= host.replug_at_us) {
        host.replug_at_us = 0;
        if (host.reboot_pending) {
            /* Power came back: the device clock restarts at zero and the core starts afresh. */
            host.reboot_pending = 0;
            host.epoch_ns = mono_ns();
            gp_app_init(&app, &cfg);
        }
        if (open_link() != 0) {
            stop_requested = 1;
        }
        printf("epoch_ns=%lld\n", (long long)host.epoch_ns);
        fflush(stdout);
    }
}

static void sleep_us(uint32_t us)
{
    struct timespec ts;
    ts.tv_sec = us / 1000000u;
    ts.tv_nsec = (long)(us % 1000000u) * 1000;
    nanosleep(&ts, NULL);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void add_event(double at_s, const char *cmd)
{
    if (host.n_events < MAX_EVENTS) {
        host.events[host.n_events].at_s = at_s;
        snprintf(host.events[host.n_events].cmd, sizeof host.events[0].cmd, "%s", cmd);
        host.n_events++;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: gripper-host [--path-file F] [--link L] [--control FIFO] [--rate HZ]\n"
            "                    [--drift-ppm P] [--jitter-us J] [--jaw-period S] [--at T:CMD]...\n"
            "                    [--unplug-after S] [--unplug-exit] [--protocol-version N]\n"
            "                    [--serial N] [--seed N] [--imu-noise LSB] [--imu-trace FILE]\n");
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    uint32_t seed = 1;
    int i;
    host.master = host.slave = host.control_fd = -1;
    host.epoch_ns = mono_ns();
    gp_config_default(&cfg);
    sim_init(seed);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--unplug-exit") == 0) {
            host.unplug_exit = 1;
            takes = 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        } else if (v == NULL) {
            usage();
            return 2;
        } else if (strcmp(a, "--path-file") == 0) {
            host.path_file = v;
        } else if (strcmp(a, "--link") == 0) {
            host.link = v;
        } else if (strcmp(a, "--control") == 0) {
            host.control = v;
        } else if (strcmp(a, "--rate") == 0) {
            cfg.rate_hz = (uint32_t)strtoul(v, NULL, 0);
        } else if (strcmp(a, "--drift-ppm") == 0) {
            host.drift_ppm = strtod(v, NULL);
        } else if (strcmp(a, "--jitter-us") == 0) {
            host.jitter_us = (uint32_t)strtoul(v, NULL, 0);
        } else if (strcmp(a, "--jaw-period") == 0) {
            sim.jaw_period_s = strtod(v, NULL);
        } else if (strcmp(a, "--imu-noise") == 0) {
            sim.imu_noise_lsb = strtod(v, NULL);
        } else if (strcmp(a, "--imu-trace") == 0) {
            if (sim_load_trace(v) != 0) {
                fprintf(stderr, "gripper-host: --imu-trace %s: need rows of 8 numbers (t gx gy gz ax ay az jaw)\n", v);
                return 2;
            }
        } else if (strcmp(a, "--at") == 0) {
            char *colon = strchr(v, ':');
            if (colon == NULL) {
                usage();
                return 2;
            }
            add_event(strtod(v, NULL), colon + 1);
        } else if (strcmp(a, "--unplug-after") == 0) {
            add_event(strtod(v, NULL), "unplug");
        } else if (strcmp(a, "--protocol-version") == 0) {
            cfg.proto = (uint8_t)strtoul(v, NULL, 0);
        } else if (strcmp(a, "--serial") == 0) {
            sim.serial = (uint32_t)strtoul(v, NULL, 0);
        } else if (strcmp(a, "--seed") == 0) {
            seed = (uint32_t)strtoul(v, NULL, 0);
            sim_seed(seed);
        } else {
            usage();
            return 2;
        }
        i += takes;
    }
    if (cfg.rate_hz == 0 || cfg.rate_hz > GP_MAX_RATE_HZ) {
        fprintf(stderr, "gripper-host: --rate must be 1..%u\n", GP_MAX_RATE_HZ);
        return 2;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (host.control) {
        unlink(host.control);
        if (mkfifo(host.control, 0600) != 0) {
            perror("gripper-host: mkfifo");
            return 1;
        }
        /* O_RDWR keeps the FIFO open for reading when writers come and go (no EOF storms). */
        host.control_fd = open(host.control, O_RDWR | O_NONBLOCK);
    }
    if (open_link() != 0) {
        return 1;
    }
    printf("epoch_ns=%lld\n", (long long)host.epoch_ns);
    fflush(stdout);
    gp_app_init(&app, &cfg);
    while (!stop_requested) {
        struct pollfd fds[2];
        struct timespec ts;
        int nfds = 0;
        int64_t wait_ns = device_us_to_mono_ns(gp_app_next_wake(&app)) - mono_ns();
        if (wait_ns < 0) {
            wait_ns = 0;
        }
        if (wait_ns > 20000000) {
            wait_ns = 20000000; /* wake regularly for scripted events and re-plugging */
        }
        if (host.master >= 0) {
            fds[nfds].fd = host.master;
            fds[nfds++].events = POLLIN;
        }
        if (host.control_fd >= 0) {
            fds[nfds].fd = host.control_fd;
            fds[nfds++].events = POLLIN;
        }
        ts.tv_sec = wait_ns / 1000000000;
        ts.tv_nsec = wait_ns % 1000000000;
        ppoll(fds, (nfds_t)nfds, &ts, NULL);
        if (host.jitter_us) {
            /* Late wake-ups and USB-style delivery delays, as on a busy MCU or hub. */
            sleep_us((uint32_t)(sim_uniform() * host.jitter_us));
        }
        poll_control();
        run_due(hal_time_us());
        gp_app_poll(&app);
    }
    close_link();
    if (host.control) {
        close(host.control_fd);
        unlink(host.control);
    }
    if (host.link) {
        unlink(host.link);
    }
    return 0;
}

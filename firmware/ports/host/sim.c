#define _DEFAULT_SOURCE
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/as5600.h"
#include "../../core/hal.h"
#include "../../core/imu.h"

sim_t sim;
static unsigned short rng[3];

void sim_init(uint32_t seed)
{
    memset(&sim, 0, sizeof sim);
    sim.jaw_period_s = 2.0;
    sim.jaw_auto = 1;
    sim.closed_raw = 1024;
    sim.open_counts = 1024;
    sim.imu_noise_lsb = 8.0;
    sim.encoder_ok = 1;
    sim.imu_ok = 1;
    sim.serial = 0x47525031u;
    sim_seed(seed);
}

void sim_seed(uint32_t seed)
{
    rng[0] = (unsigned short)seed;
    rng[1] = (unsigned short)(seed >> 16);
    rng[2] = 0x330E;
}

double sim_uniform(void) { return erand48(rng); }

double sim_gauss(void)
{
    double u1 = sim_uniform(), u2 = sim_uniform();
    if (u1 < 1e-12) {
        u1 = 1e-12;
    }
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void sim_set_input(int bit, int level)
{
    uint8_t mask = (uint8_t)(1u << bit);
    uint8_t next = level ? (uint8_t)(sim.inputs | mask) : (uint8_t)(sim.inputs & ~mask);
    if (next != sim.inputs) {
        sim.bounce_until_us[bit] = hal_time_us() + 4000u; /* contacts chatter ~4 ms */
    }
    sim.inputs = next;
}

#define TRACE_COLS 8

/* The trace row at the current device time (linear between rows; held at the ends). */
static void trace_now(double out[TRACE_COLS])
{
    const double *tr = sim.trace;
    double t = sim.trace_playing ? (double)(hal_time_us() - sim.trace_start_us) * 1e-6 : tr[0];
    size_t lo = 0, hi = sim.trace_rows - 1, i;
    if (t <= tr[0]) {
        memcpy(out, tr, sizeof(double) * TRACE_COLS);
        return;
    }
    if (t >= tr[hi * TRACE_COLS]) {
        memcpy(out, tr + hi * TRACE_COLS, sizeof(double) * TRACE_COLS);
        return;
    }
    while (hi - lo > 1) { /* the rows are in time order */
        size_t mid = (lo + hi) / 2;
        if (tr[mid * TRACE_COLS] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    {
        double t0 = tr[lo * TRACE_COLS], t1 = tr[hi * TRACE_COLS];
        double a = t1 > t0 ? (t - t0) / (t1 - t0) : 0.0;
        for (i = 0; i < TRACE_COLS; i++) {
            out[i] = tr[lo * TRACE_COLS + i] * (1 - a) + tr[hi * TRACE_COLS + i] * a;
        }
    }
}

int sim_load_trace(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t cap = 4096, n = 0;
    double row[TRACE_COLS];
    if (f == NULL) {
        return -1;
    }
    sim.trace = malloc(cap * TRACE_COLS * sizeof(double));
    while (sim.trace != NULL && fscanf(f, "%lf %lf %lf %lf %lf %lf %lf %lf", &row[0], &row[1], &row[2], &row[3],
                                       &row[4], &row[5], &row[6], &row[7]) == TRACE_COLS) {
        if (n == cap) {
            double *grown = realloc(sim.trace, 2 * cap * TRACE_COLS * sizeof(double));
            if (grown == NULL) {
                break;
            }
            sim.trace = grown;
            cap *= 2;
        }
        memcpy(sim.trace + n * TRACE_COLS, row, sizeof row);
        n++;
    }
    fclose(f);
    sim.trace_rows = n;
    return n > 1 ? 0 : -1;
}

void sim_trace_start(void)
{
    sim.trace_start_us = hal_time_us();
    sim.trace_playing = 1;
}

static double jaw_now(void)
{
    double t;
    if (sim.trace_rows) {
        double row[TRACE_COLS];
        trace_now(row);
        return row[7];
    }
    if (!sim.jaw_auto || sim.jaw_period_s <= 0) {
        return sim.jaw_hold;
    }
    t = (double)hal_time_us() * 1e-6;
    return 0.5 - 0.5 * cos(6.283185307179586 * t / sim.jaw_period_s);
}

uint8_t hal_inputs_raw(void)
{
    uint8_t out = sim.inputs;
    uint64_t now = hal_time_us();
    int i;
    for (i = 0; i < 8; i++) {
        if (now < sim.bounce_until_us[i] && sim_uniform() < 0.5) {
            out ^= (uint8_t)(1u << i);
        }
    }
    return out;
}

/* AS5600 model: STATUS and RAW ANGLE registers. */
int hal_i2c_read(uint8_t addr, uint8_t reg, uint8_t *buf, size_t n)
{
    if (addr != AS5600_ADDR || !sim.encoder_ok) {
        return 1; /* NACK: encoder unplugged */
    }
    if (reg == AS5600_REG_STATUS && n == 1) {
        buf[0] = AS5600_STATUS_MD;
        return 0;
    }
    if (reg == AS5600_REG_RAW_ANGLE && n == 2) {
        long counts = lround(jaw_now() * sim.open_counts + sim_gauss() * 0.7);
        uint16_t raw = (uint16_t)((sim.closed_raw + counts) & 0x0FFF);
        buf[0] = (uint8_t)(raw >> 8);
        buf[1] = (uint8_t)raw;
        return 0;
    }
    return 1;
}

int hal_i2c_write(uint8_t addr, uint8_t reg, const uint8_t *buf, size_t n)
{
    (void)reg; (void)buf; (void)n;
    return addr == AS5600_ADDR && sim.encoder_ok ? 0 : 1;
}

static int16_t noisy(double v)
{
    double x = v + sim_gauss() * sim.imu_noise_lsb;
    if (x > 32767) x = 32767;
    if (x < -32768) x = -32768;
    return (int16_t)lround(x);
}

/* IMU model: WHO_AM_I, control writes, and a burst read of gyro+accel. At rest with gravity on z;
 * the wrist turns a little as the jaw moves so the gyro has something to show. */
int hal_spi_transfer(const uint8_t *tx, uint8_t *rx, size_t n)
{
    size_t i;
    if (!sim.imu_ok) {
        return 1;
    }
    memset(rx, 0, n);
    if (tx[0] == (IMU_REG_WHO_AM_I | 0x80u) && n >= 2) {
        rx[1] = IMU_WHO_AM_I;
    } else if (tx[0] == (IMU_REG_OUTX_L_G | 0x80u) && n >= 13) {
        double lsb_per_g = 32768.0 / IMU_ACCEL_FS_G;
        int16_t v[6];
        if (sim.trace_rows) { /* the recorded motion, in the IMU's full-scale units */
            double row[TRACE_COLS], lsb_per_rad_s = 32768.0 / (IMU_GYRO_FS_DPS * 3.14159265358979 / 180.0);
            trace_now(row);
            for (i = 0; i < 3; i++) {
                v[i] = noisy(row[1 + i] * lsb_per_rad_s);
                v[3 + i] = noisy(row[4 + i] / 9.80665 * lsb_per_g);
            }
            for (i = 0; i < 6; i++) {
                rx[1 + 2 * i] = (uint8_t)(uint16_t)v[i];
                rx[2 + 2 * i] = (uint8_t)((uint16_t)v[i] >> 8);
            }
            return 0;
        }
        v[0] = noisy(0);
        v[1] = noisy(0);
        v[2] = noisy(200.0 * (jaw_now() - 0.5));
        v[3] = noisy(0);
        v[4] = noisy(0);
        v[5] = noisy(lsb_per_g);
        for (i = 0; i < 6; i++) {
            rx[1 + 2 * i] = (uint8_t)(uint16_t)v[i];
            rx[2 + 2 * i] = (uint8_t)((uint16_t)v[i] >> 8);
        }
    }
    return 0;
}

uint32_t hal_serial_number(void) { return sim.serial; }

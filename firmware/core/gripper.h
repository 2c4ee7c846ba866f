/* The gripper application: sampling tick, sensor fusion into SAMPLE messages, command handling.
 * Board ports call gp_app_init once and gp_app_poll as often as they can (or sleep until
 * gp_app_next_wake). */
#ifndef GP_GRIPPER_H
#define GP_GRIPPER_H
#include <stdint.h>

#include "debounce.h"
#include "filter.h"
#include "protocol.h"
#include "sched.h"

#define GP_FW_MAJOR 1u
#define GP_FW_MINOR 0u
#define GP_FW_PATCH 0u
#define GP_DEFAULT_RATE_HZ 200u
#define GP_MAX_RATE_HZ 1000u
#define GP_DEFAULT_CUTOFF_DHZ 150u /* 15 Hz: smooths encoder noise, keeps a squeeze crisp */

typedef struct {
    uint32_t rate_hz;
    uint16_t cutoff_dhz;
    uint16_t jaw_closed_raw;  /* encoder counts with the jaw shut */
    int32_t jaw_open_urad;    /* jaw angle at full open, relative to closed */
    int8_t jaw_direction;     /* +1 or -1: which way the magnet turns as the jaw opens */
    uint8_t debounce_ticks;
    uint8_t proto;            /* protocol version spoken; only test ports change it */
} gp_config_t;

typedef struct {
    gp_config_t cfg;
    gp_sched_t sched;
    gp_rx_t rx;
    gp_lowpass_t jaw_lp;
    gp_debounce_t inputs;
    uint8_t streaming;
    uint8_t led_mode;
    uint8_t sensors_ok;
    uint32_t seq;
    uint32_t late_pending; /* skipped deadlines not yet reported in a sample's flags */
    uint32_t ticks;
} gp_app_t;

void gp_config_default(gp_config_t *cfg);
void gp_app_init(gp_app_t *app, const gp_config_t *cfg);
void gp_app_poll(gp_app_t *app);
uint64_t gp_app_next_wake(const gp_app_t *app);
/* Handle one received payload (exposed for unit tests). rx_us = device time it arrived. */
void gp_app_handle(gp_app_t *app, const uint8_t *payload, size_t n, uint64_t rx_us);
/* Run one sampling tick now (exposed for unit tests). */
void gp_app_tick(gp_app_t *app, uint32_t skipped);
/* Encoder counts -> jaw angle in microradians relative to closed (shortest way round). */
int32_t gp_jaw_urad(const gp_config_t *cfg, uint16_t raw);

#endif

/* One-pole low-pass in fixed point: y += alpha * (x - y), alpha = w / (1 + w), w = 2*pi*fc/fs.
 * Fixed point keeps it identical on an FPU-less MCU and on the host. */
#ifndef GP_FILTER_H
#define GP_FILTER_H
#include <stdint.h>

typedef struct {
    uint32_t alpha_q16; /* 65536 = pass-through */
    int64_t y_q16;
    int primed;
} gp_lowpass_t;

/* cutoff in deci-hertz (0 disables filtering); rate in Hz. */
void gp_lowpass_config(gp_lowpass_t *f, uint16_t cutoff_dhz, uint32_t rate_hz);
int32_t gp_lowpass_step(gp_lowpass_t *f, int32_t x);

#endif

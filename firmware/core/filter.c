#include "filter.h"

void gp_lowpass_config(gp_lowpass_t *f, uint16_t cutoff_dhz, uint32_t rate_hz)
{
    /* 2*pi*fc/fs with fc = dhz/10, scaled by 1e4 to stay in integers. */
    uint64_t w = 62832u * (uint64_t)cutoff_dhz;
    uint64_t fs = 100000u * (uint64_t)(rate_hz ? rate_hz : 1u);
    f->alpha_q16 = cutoff_dhz == 0 ? 65536u : (uint32_t)((w * 65536u) / (fs + w));
    if (f->alpha_q16 == 0) {
        f->alpha_q16 = 1;
    }
}

int32_t gp_lowpass_step(gp_lowpass_t *f, int32_t x)
{
    int64_t xq = (int64_t)x * 65536;
    if (!f->primed) {
        f->y_q16 = xq; /* start at the first reading instead of ramping up from zero */
        f->primed = 1;
    } else {
        f->y_q16 += ((xq - f->y_q16) * (int64_t)f->alpha_q16) / 65536;
    }
    return (int32_t)(f->y_q16 / 65536);
}

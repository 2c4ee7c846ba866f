#include "sched.h"

static uint64_t at(const gp_sched_t *s, uint64_t k)
{
    return s->t0_us + (k * 1000000u) / s->rate_hz;
}

void gp_sched_start(gp_sched_t *s, uint32_t rate_hz, uint64_t now_us)
{
    s->t0_us = now_us;
    s->k = 0;
    s->rate_hz = rate_hz ? rate_hz : 1u;
    s->skipped = 0;
}

uint64_t gp_sched_deadline(const gp_sched_t *s)
{
    return at(s, s->k);
}

int gp_sched_due(gp_sched_t *s, uint64_t now_us, uint32_t *skipped_now)
{
    uint64_t k_now;
    *skipped_now = 0;
    if (now_us < at(s, s->k)) {
        return 0;
    }
    /* Index of the latest deadline not after now; anything between s->k and it was missed. */
    k_now = ((now_us - s->t0_us) * s->rate_hz) / 1000000u;
    if (k_now < s->k) {
        k_now = s->k; /* deadlines are floored to whole us, so the estimate can trail by one */
    }
    while (at(s, k_now + 1u) <= now_us) {
        k_now++;
    }
    while (k_now > s->k && at(s, k_now) > now_us) {
        k_now--;
    }
    if (k_now > s->k) {
        *skipped_now = (uint32_t)(k_now - s->k);
        s->skipped += *skipped_now;
    }
    s->k = k_now + 1u;
    return 1;
}

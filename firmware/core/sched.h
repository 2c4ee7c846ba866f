/* Absolute-deadline periodic scheduler: deadline k = t0 + k * 1e6 / rate, computed from k so
 * rounding never accumulates (no drift at rates that do not divide 1e6). */
#ifndef GP_SCHED_H
#define GP_SCHED_H
#include <stdint.h>

typedef struct {
    uint64_t t0_us;
    uint64_t k;
    uint32_t rate_hz;
    uint32_t skipped; /* deadlines dropped because we were late by more than one period */
} gp_sched_t;

void gp_sched_start(gp_sched_t *s, uint32_t rate_hz, uint64_t now_us);
uint64_t gp_sched_deadline(const gp_sched_t *s);
/* Returns 1 when the current deadline has passed (and advances to the next one); if we fell more
 * than a whole period behind, jumps to the next future deadline and counts the skipped ones. */
int gp_sched_due(gp_sched_t *s, uint64_t now_us, uint32_t *skipped_now);

#endif

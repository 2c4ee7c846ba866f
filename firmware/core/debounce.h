/* Per-bit counter debounce: a bit changes only after it read the new level `need` ticks in a row. */
#ifndef GP_DEBOUNCE_H
#define GP_DEBOUNCE_H
#include <stdint.h>

typedef struct {
    uint8_t state;
    uint8_t count[8];
    uint8_t need;
} gp_debounce_t;

void gp_debounce_init(gp_debounce_t *d, uint8_t need);
uint8_t gp_debounce_step(gp_debounce_t *d, uint8_t raw);

#endif

#include "debounce.h"

void gp_debounce_init(gp_debounce_t *d, uint8_t need)
{
    int i;
    d->state = 0;
    d->need = need ? need : 1u;
    for (i = 0; i < 8; i++) {
        d->count[i] = 0;
    }
}

uint8_t gp_debounce_step(gp_debounce_t *d, uint8_t raw)
{
    int i;
    for (i = 0; i < 8; i++) {
        uint8_t bit = (uint8_t)(1u << i);
        if ((raw & bit) == (d->state & bit)) {
            d->count[i] = 0;
        } else if (++d->count[i] >= d->need) {
            d->state ^= bit;
            d->count[i] = 0;
        }
    }
    return d->state;
}

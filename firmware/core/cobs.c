#include "cobs.h"

size_t gp_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t code_at = 0, o = 1, i;
    uint8_t code = 1;
    if (cap < GP_COBS_MAX(n)) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            code++;
            if (code == 0xFF) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

size_t gp_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int *ok)
{
    size_t i = 0, o = 0;
    *ok = 0;
    while (i < n) {
        uint8_t code = in[i++];
        uint8_t k;
        if (code == 0) {
            return 0;
        }
        for (k = 1; k < code; k++) {
            if (i >= n || in[i] == 0 || o >= cap) {
                return 0;
            }
            out[o++] = in[i++];
        }
        /* A code below 0xFF marks a zero, except the one that closes the block. */
        if (code != 0xFF && i < n) {
            if (o >= cap) {
                return 0;
            }
            out[o++] = 0;
        }
    }
    *ok = 1;
    return o;
}

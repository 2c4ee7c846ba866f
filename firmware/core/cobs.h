/* Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames. */
#ifndef GP_COBS_H
#define GP_COBS_H
#include <stddef.h>
#include <stdint.h>

/* Worst-case encoded size of n bytes (without the trailing delimiter). */
#define GP_COBS_MAX(n) ((n) + (n) / 254u + 1u)

/* Returns the encoded length, or 0 if cap is too small. */
size_t gp_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
/* Returns the decoded length; 0 with *ok = 0 on malformed input or a too-small buffer. */
size_t gp_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int *ok);

#endif

#include "crc16.h"

/* Bitwise form: frames are ~40 bytes at a few hundred Hz, so a 512-byte table buys nothing on an MCU. */
uint16_t gp_crc16(const uint8_t *data, size_t n)
{
    uint16_t crc = 0;
    size_t i;
    int bit;
    for (i = 0; i < n; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

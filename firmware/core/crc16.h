/* CRC-16/XMODEM (poly 0x1021, init 0, no reflection): the frame check of the wire protocol. */
#ifndef GP_CRC16_H
#define GP_CRC16_H
#include <stddef.h>
#include <stdint.h>

uint16_t gp_crc16(const uint8_t *data, size_t n);

#endif

#include "as5600.h"

#include "hal.h"

int as5600_read(uint16_t *raw)
{
    uint8_t b[2];
    uint8_t st;
    if (hal_i2c_read(AS5600_ADDR, AS5600_REG_STATUS, &st, 1) != 0 || !(st & AS5600_STATUS_MD)) {
        return 1;
    }
    if (hal_i2c_read(AS5600_ADDR, AS5600_REG_RAW_ANGLE, b, 2) != 0) {
        return 1;
    }
    *raw = (uint16_t)(((uint16_t)(b[0] & 0x0Fu) << 8) | b[1]);
    return 0;
}

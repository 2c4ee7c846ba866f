/* AS5600-class 12-bit magnetic angle encoder on I2C. */
#ifndef GP_AS5600_H
#define GP_AS5600_H
#include <stdint.h>

#define AS5600_ADDR 0x36u
#define AS5600_REG_STATUS 0x0Bu
#define AS5600_REG_RAW_ANGLE 0x0Cu /* 0x0C high nibble, 0x0D low byte */
#define AS5600_STATUS_MD 0x20u     /* magnet detected */
#define AS5600_COUNTS 4096u

/* 0 on success with the raw angle (0..4095) in *raw; nonzero on bus error or missing magnet. */
int as5600_read(uint16_t *raw);

#endif

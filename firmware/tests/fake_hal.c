#include "fake_hal.h"

#include <string.h>

#include "../core/as5600.h"
#include "../core/hal.h"
#include "../core/imu.h"

uint64_t fake_now_us;
uint16_t fake_angle_raw;
int fake_encoder_ok, fake_imu_ok;
uint8_t fake_inputs;
uint8_t fake_tx[8192];
size_t fake_tx_len;
uint8_t fake_rx[1024];
size_t fake_rx_len, fake_rx_pos;

void fake_reset(void)
{
    fake_now_us = 1000;
    fake_angle_raw = 1024;
    fake_encoder_ok = 1;
    fake_imu_ok = 1;
    fake_inputs = 0;
    fake_tx_len = 0;
    fake_rx_len = 0;
    fake_rx_pos = 0;
}

void fake_rx_push(const uint8_t *b, size_t n)
{
    memcpy(fake_rx + fake_rx_len, b, n);
    fake_rx_len += n;
}

uint64_t hal_time_us(void) { return fake_now_us; }

int hal_i2c_read(uint8_t addr, uint8_t reg, uint8_t *buf, size_t n)
{
    if (!fake_encoder_ok || addr != AS5600_ADDR) {
        return 1;
    }
    if (reg == AS5600_REG_STATUS && n == 1) {
        buf[0] = AS5600_STATUS_MD;
        return 0;
    }
    if (reg == AS5600_REG_RAW_ANGLE && n == 2) {
        buf[0] = (uint8_t)(fake_angle_raw >> 8);
        buf[1] = (uint8_t)fake_angle_raw;
        return 0;
    }
    return 1;
}

int hal_i2c_write(uint8_t addr, uint8_t reg, const uint8_t *buf, size_t n)
{
    (void)addr; (void)reg; (void)buf; (void)n;
    return 0;
}

int hal_spi_transfer(const uint8_t *tx, uint8_t *rx, size_t n)
{
    size_t i;
    if (!fake_imu_ok) {
        return 1;
    }
    memset(rx, 0, n);
    if (tx[0] == (IMU_REG_WHO_AM_I | 0x80u) && n == 2) {
        rx[1] = IMU_WHO_AM_I;
    } else if (tx[0] == (IMU_REG_OUTX_L_G | 0x80u)) {
        for (i = 1; i < n; i++) {
            rx[i] = (uint8_t)i; /* gyro x = 0x0201, ... */
        }
    }
    return 0;
}

uint8_t hal_inputs_raw(void) { return fake_inputs; }
void hal_led_set(int on) { (void)on; }

size_t hal_serial_read(uint8_t *buf, size_t cap)
{
    size_t n = fake_rx_len - fake_rx_pos;
    if (n > cap) {
        n = cap;
    }
    memcpy(buf, fake_rx + fake_rx_pos, n);
    fake_rx_pos += n;
    return n;
}

void hal_serial_write(const uint8_t *buf, size_t n)
{
    if (fake_tx_len + n <= sizeof fake_tx) {
        memcpy(fake_tx + fake_tx_len, buf, n);
        fake_tx_len += n;
    }
}

uint32_t hal_serial_number(void) { return 0x47525031u; }

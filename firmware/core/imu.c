#include "imu.h"

#include "hal.h"

static int reg_write(uint8_t reg, uint8_t v)
{
    uint8_t tx[2], rx[2];
    tx[0] = reg;
    tx[1] = v;
    return hal_spi_transfer(tx, rx, 2);
}

int imu_init(void)
{
    uint8_t tx[2] = { IMU_REG_WHO_AM_I | 0x80u, 0 }, rx[2] = { 0, 0 };
    if (hal_spi_transfer(tx, rx, 2) != 0 || rx[1] != IMU_WHO_AM_I) {
        return 1;
    }
    /* 833 Hz output data rate; accel +-8 g, gyro +-2000 dps (matches IMU_*_FS in HELLO). */
    if (reg_write(IMU_REG_CTRL1_XL, 0x7Cu) != 0 || reg_write(IMU_REG_CTRL2_G, 0x7Cu) != 0) {
        return 1;
    }
    return 0;
}

int imu_read(int16_t accel[3], int16_t gyro[3])
{
    uint8_t tx[13] = { 0 }, rx[13] = { 0 };
    int i;
    tx[0] = IMU_REG_OUTX_L_G | 0x80u;
    if (hal_spi_transfer(tx, rx, sizeof tx) != 0) {
        return 1;
    }
    for (i = 0; i < 3; i++) {
        gyro[i] = (int16_t)(uint16_t)(rx[1 + 2 * i] | (uint16_t)(rx[2 + 2 * i] << 8));
        accel[i] = (int16_t)(uint16_t)(rx[7 + 2 * i] | (uint16_t)(rx[8 + 2 * i] << 8));
    }
    return 0;
}

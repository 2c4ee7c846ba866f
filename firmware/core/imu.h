/* 6-axis IMU on SPI, register map of the common LSM6DS-class parts (read = reg | 0x80). */
#ifndef GP_IMU_H
#define GP_IMU_H
#include <stdint.h>

#define IMU_REG_WHO_AM_I 0x0Fu
#define IMU_WHO_AM_I 0x6Cu
#define IMU_REG_CTRL1_XL 0x10u
#define IMU_REG_CTRL2_G 0x11u
#define IMU_REG_OUTX_L_G 0x22u /* gyro x,y,z then accel x,y,z, int16 little-endian */
#define IMU_ACCEL_FS_G 8u
#define IMU_GYRO_FS_DPS 2000u

int imu_init(void);
int imu_read(int16_t accel[3], int16_t gyro[3]);

#endif

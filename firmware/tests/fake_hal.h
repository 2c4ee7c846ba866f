/* A scriptable HAL for unit tests: time is a variable, serial output lands in a buffer. */
#ifndef FAKE_HAL_H
#define FAKE_HAL_H
#include <stddef.h>
#include <stdint.h>

extern uint64_t fake_now_us;
extern uint16_t fake_angle_raw;
extern int fake_encoder_ok, fake_imu_ok;
extern uint8_t fake_inputs;
extern uint8_t fake_tx[8192];
extern size_t fake_tx_len;
extern uint8_t fake_rx[1024];
extern size_t fake_rx_len, fake_rx_pos;

void fake_reset(void);
void fake_rx_push(const uint8_t *b, size_t n);

#endif

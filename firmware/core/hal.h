/* The tiny hardware layer a board port implements. The core calls nothing else. */
#ifndef GP_HAL_H
#define GP_HAL_H
#include <stddef.h>
#include <stdint.h>

/* Free-running device clock in microseconds; monotonic, never wraps in practice (64 bit). */
uint64_t hal_time_us(void);

/* I2C register access (7-bit address). Return 0 on success, nonzero on NACK/timeout. */
int hal_i2c_read(uint8_t addr, uint8_t reg, uint8_t *buf, size_t n);
int hal_i2c_write(uint8_t addr, uint8_t reg, const uint8_t *buf, size_t n);

/* Full-duplex SPI transfer with chip-select asserted for the whole transfer. 0 on success. */
int hal_spi_transfer(const uint8_t *tx, uint8_t *rx, size_t n);

/* Raw (bouncy) digital inputs: bit 0 = trigger, bits 1.. = buttons; 1 = pressed. */
uint8_t hal_inputs_raw(void);

void hal_led_set(int on);

/* Serial link to the host: non-blocking read (returns bytes read, 0 if none) and a write that
 * queues or sends the whole buffer. */
size_t hal_serial_read(uint8_t *buf, size_t cap);
void hal_serial_write(const uint8_t *buf, size_t n);

/* Identity burned at the factory (or derived from the MCU unique ID). */
uint32_t hal_serial_number(void);

#endif

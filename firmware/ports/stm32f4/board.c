/* STM32F405 board port, register level, running on the 16 MHz internal oscillator (plenty for a
 * few hundred samples a second, and no PLL start-up to go wrong).
 *
 * Pins: USART1 TX PA9 / RX PA10 (1 Mbaud, to a USB-UART bridge) - AS5600 on I2C1 SCL PB6 / SDA PB7
 * - IMU on SPI1 SCK PA5 / MISO PA6 / MOSI PA7, CS PA4 - trigger PC0, buttons PC1..PC2 (to ground,
 * pull-ups on) - status LED PC13 (active low). */
#include <stddef.h>
#include <stdint.h>

#include "../../core/gripper.h"
#include "../../core/hal.h"
#include "stm32f4.h"

#define HCLK_HZ 16000000u
#define BAUD 1000000u
#define BUS_TIMEOUT 20000u /* polling iterations before a bus is declared stuck (~ms) */

#ifdef BOARD_QEMU
/* QEMU's STM32 timer counts at its own model clock, not HSI/PSC; it ticks at 1 GHz / (PSC+1). */
#define TIM2_PSC 999u
#else
#define TIM2_PSC (HCLK_HZ / 1000000u - 1u)
#endif

/* ---- serial: RX interrupt into a ring, TX polled (1 Mbaud: a 40-byte frame is 0.4 ms) ---- */
static volatile uint8_t rx_ring[256];
static volatile uint8_t rx_head, rx_tail;

void USART1_IRQHandler(void);
void USART1_IRQHandler(void)
{
    uint32_t sr = USART_SR(USART1_BASE);
    if (sr & (USART_SR_RXNE | USART_SR_ORE)) {
        uint8_t b = (uint8_t)USART_DR(USART1_BASE); /* reading DR also clears ORE */
        uint8_t next = (uint8_t)(rx_head + 1u);
        if (next != rx_tail) {
            rx_ring[rx_head] = b;
            rx_head = next;
        }
    }
}

size_t hal_serial_read(uint8_t *buf, size_t cap)
{
    size_t n = 0;
    while (n < cap && rx_tail != rx_head) {
        buf[n++] = rx_ring[rx_tail];
        rx_tail = (uint8_t)(rx_tail + 1u);
    }
    return n;
}

void hal_serial_write(const uint8_t *buf, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        while (!(USART_SR(USART1_BASE) & USART_SR_TXE)) {
        }
        USART_DR(USART1_BASE) = buf[i];
    }
}

/* ---- time: TIM2 at 1 MHz, extended to 64 bits on every read (the main loop reads it far more
 * often than the 71-minute wrap, and only the main loop reads it) ---- */
uint64_t hal_time_us(void)
{
    static uint32_t last, high;
    uint32_t now = TIM_CNT(TIM2_BASE);
    if (now < last) {
        high++;
    }
    last = now;
    return ((uint64_t)high << 32) | now;
}

/* ---- I2C1, 100 kHz, polled with timeouts so a missing encoder cannot hang sampling ---- */
static int i2c_wait(uint32_t flag)
{
    uint32_t t = BUS_TIMEOUT;
    while (!(I2C_SR1(I2C1_BASE) & flag)) {
        if ((I2C_SR1(I2C1_BASE) & I2C_SR1_AF) || --t == 0) {
            I2C_SR1(I2C1_BASE) = 0;
            I2C_CR1(I2C1_BASE) |= I2C_CR1_STOP;
            return 1;
        }
    }
    return 0;
}

static int i2c_start(uint8_t addr_rw)
{
    I2C_CR1(I2C1_BASE) |= I2C_CR1_START;
    if (i2c_wait(I2C_SR1_SB)) {
        return 1;
    }
    I2C_DR(I2C1_BASE) = addr_rw;
    if (i2c_wait(I2C_SR1_ADDR)) {
        return 1;
    }
    return 0;
}

static void i2c_clear_addr(void)
{
    volatile uint32_t r = I2C_SR1(I2C1_BASE);
    r = I2C_SR2(I2C1_BASE);
    (void)r;
}

int hal_i2c_write(uint8_t addr, uint8_t reg, const uint8_t *buf, size_t n)
{
    size_t i;
    if (i2c_start((uint8_t)(addr << 1))) {
        return 1;
    }
    i2c_clear_addr();
    I2C_DR(I2C1_BASE) = reg;
    for (i = 0; i < n; i++) {
        if (i2c_wait(I2C_SR1_TXE)) {
            return 1;
        }
        I2C_DR(I2C1_BASE) = buf[i];
    }
    if (i2c_wait(I2C_SR1_BTF)) {
        return 1;
    }
    I2C_CR1(I2C1_BASE) |= I2C_CR1_STOP;
    return 0;
}

int hal_i2c_read(uint8_t addr, uint8_t reg, uint8_t *buf, size_t n)
{
    size_t i;
    if (n == 0 || i2c_start((uint8_t)(addr << 1))) {
        return 1;
    }
    i2c_clear_addr();
    I2C_DR(I2C1_BASE) = reg;
    if (i2c_wait(I2C_SR1_BTF)) {
        return 1;
    }
    if (i2c_start((uint8_t)((addr << 1) | 1u))) {
        return 1;
    }
    /* ACK every byte but the last; NACK + STOP are set while the last byte is shifting in. */
    if (n == 1) {
        I2C_CR1(I2C1_BASE) &= ~I2C_CR1_ACK;
    } else {
        I2C_CR1(I2C1_BASE) |= I2C_CR1_ACK;
    }
    i2c_clear_addr();
    for (i = 0; i < n; i++) {
        if (i == n - 1u) {
            I2C_CR1(I2C1_BASE) &= ~I2C_CR1_ACK;
            I2C_CR1(I2C1_BASE) |= I2C_CR1_STOP;
        }
        if (i2c_wait(I2C_SR1_RXNE)) {
            return 1;
        }
        buf[i] = (uint8_t)I2C_DR(I2C1_BASE);
    }
    return 0;
}

/* ---- SPI1, mode 3, 1 MHz; CS on PA4 ---- */
int hal_spi_transfer(const uint8_t *tx, uint8_t *rx, size_t n)
{
    size_t i;
    int err = 0;
    GPIO_BSRR(GPIOA_BASE) = 1u << (4 + 16);
    for (i = 0; i < n && !err; i++) {
        uint32_t t = BUS_TIMEOUT;
        while (!(SPI_SR(SPI1_BASE) & SPI_SR_TXE) && --t) {
        }
        SPI_DR(SPI1_BASE) = tx[i];
        t = BUS_TIMEOUT;
        while (!(SPI_SR(SPI1_BASE) & SPI_SR_RXNE) && --t) {
        }
        err = t == 0;
        rx[i] = (uint8_t)SPI_DR(SPI1_BASE);
    }
    GPIO_BSRR(GPIOA_BASE) = 1u << 4;
    return err;
}

/* ---- inputs and LED ---- */
uint8_t hal_inputs_raw(void)
{
#ifdef BOARD_QEMU
    return 0; /* QEMU models no GPIO input levels: report everything released */
#endif
    return (uint8_t)(~GPIO_IDR(GPIOC_BASE) & 0x7u); /* active low: pressed pulls to ground */
}

void hal_led_set(int on)
{
    GPIO_BSRR(GPIOC_BASE) = on ? (1u << (13 + 16)) : (1u << 13);
}

uint32_t hal_serial_number(void)
{
#ifdef BOARD_QEMU
    return 0x51454D55u; /* "QEMU": the model has no unique-ID area */
#else
    return REG(UID_BASE) ^ REG(UID_BASE + 4u) ^ REG(UID_BASE + 8u);
#endif
}

static void gpio_af(uint32_t base, unsigned pin, unsigned af)
{
    GPIO_MODER(base) = (GPIO_MODER(base) & ~(3u << (2 * pin))) | (2u << (2 * pin));
    GPIO_OSPEEDR(base) |= 2u << (2 * pin);
    if (pin < 8) {
        GPIO_AFRL(base) = (GPIO_AFRL(base) & ~(0xFu << (4 * pin))) | (af << (4 * pin));
    } else {
        GPIO_AFRH(base) = (GPIO_AFRH(base) & ~(0xFu << (4 * (pin - 8)))) | (af << (4 * (pin - 8)));
    }
}

static void board_init(void)
{
    unsigned pin;
    RCC_AHB1ENR |= 0x7u;                   /* GPIOA..C */
    RCC_APB1ENR |= (1u << 0) | (1u << 21); /* TIM2, I2C1 */
    RCC_APB2ENR |= (1u << 4) | (1u << 12); /* USART1, SPI1 */

    /* USART1 on PA9/PA10 (AF7) */
    gpio_af(GPIOA_BASE, 9, 7);
    gpio_af(GPIOA_BASE, 10, 7);
    USART_BRR(USART1_BASE) = HCLK_HZ / BAUD; /* 16 MHz / 1 Mbaud = 16.0 */
    USART_CR1(USART1_BASE) = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    NVIC_ISER(USART1_IRQN / 32u) = 1u << (USART1_IRQN % 32u);

    /* TIM2 free-running at 1 MHz over the full 32-bit range */
    TIM_PSC(TIM2_BASE) = TIM2_PSC;
    TIM_ARR(TIM2_BASE) = 0xFFFFFFFFu;
    TIM_EGR(TIM2_BASE) = 1u; /* load the prescaler now */
    TIM_CR1(TIM2_BASE) = 1u;

    /* I2C1 on PB6/PB7 (AF4, open drain), 100 kHz from a 16 MHz APB1 */
    gpio_af(GPIOB_BASE, 6, 4);
    gpio_af(GPIOB_BASE, 7, 4);
    GPIO_OTYPER(GPIOB_BASE) |= (1u << 6) | (1u << 7);
    I2C_CR1(I2C1_BASE) = I2C_CR1_SWRST;
    I2C_CR1(I2C1_BASE) = 0;
    I2C_CR2(I2C1_BASE) = 16u;
    I2C_CCR(I2C1_BASE) = 80u;
    I2C_TRISE(I2C1_BASE) = 17u;
    I2C_CR1(I2C1_BASE) = I2C_CR1_PE;

    /* SPI1 on PA5..7 (AF5), CS PA4 as output held high; mode 3, fPCLK/16, software NSS */
    for (pin = 5; pin <= 7; pin++) {
        gpio_af(GPIOA_BASE, pin, 5);
    }
    GPIO_MODER(GPIOA_BASE) = (GPIO_MODER(GPIOA_BASE) & ~(3u << 8)) | (1u << 8);
    GPIO_BSRR(GPIOA_BASE) = 1u << 4;
    SPI_CR1(SPI1_BASE) = (1u << 0) | (1u << 1) | (1u << 2) | (3u << 3) | (1u << 8) | (1u << 9) | (1u << 6);

    /* PC0..2 inputs with pull-ups; PC13 LED output */
    GPIO_MODER(GPIOC_BASE) &= ~0x3Fu;
    GPIO_PUPDR(GPIOC_BASE) = (GPIO_PUPDR(GPIOC_BASE) & ~0x3Fu) | 0x15u;
    GPIO_MODER(GPIOC_BASE) = (GPIO_MODER(GPIOC_BASE) & ~(3u << 26)) | (1u << 26);
}

int main(void)
{
    static gp_app_t app;
    gp_config_t cfg;
    board_init();
    gp_config_default(&cfg);
    gp_app_init(&app, &cfg);
    for (;;) {
        gp_app_poll(&app);
    }
}

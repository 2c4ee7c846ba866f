/* The few STM32F405 registers this port touches (RM0090), written out so the build needs no
 * vendor headers: Debian's gcc-arm-none-eabi + libnewlib-arm-none-eabi are enough. */
#ifndef GP_STM32F4_H
#define GP_STM32F4_H
#include <stdint.h>

#define REG(addr) (*(volatile uint32_t *)(addr))

/* RCC */
#define RCC_BASE 0x40023800u
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)

/* GPIO */
#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
#define GPIOC_BASE 0x40020800u
#define GPIO_MODER(b) REG((b) + 0x00u)
#define GPIO_OTYPER(b) REG((b) + 0x04u)
#define GPIO_OSPEEDR(b) REG((b) + 0x08u)
#define GPIO_PUPDR(b) REG((b) + 0x0Cu)
#define GPIO_IDR(b) REG((b) + 0x10u)
#define GPIO_BSRR(b) REG((b) + 0x18u)
#define GPIO_AFRL(b) REG((b) + 0x20u)
#define GPIO_AFRH(b) REG((b) + 0x24u)

/* USART1 (APB2) */
#define USART1_BASE 0x40011000u
#define USART_SR(b) REG((b) + 0x00u)
#define USART_DR(b) REG((b) + 0x04u)
#define USART_BRR(b) REG((b) + 0x08u)
#define USART_CR1(b) REG((b) + 0x0Cu)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TXE (1u << 7)
#define USART_SR_ORE (1u << 3)
#define USART_CR1_UE (1u << 13)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RE (1u << 2)
#define USART1_IRQN 37u

/* TIM2 (APB1, 32-bit) */
#define TIM2_BASE 0x40000000u
#define TIM_CR1(b) REG((b) + 0x00u)
#define TIM_EGR(b) REG((b) + 0x14u)
#define TIM_CNT(b) REG((b) + 0x24u)
#define TIM_PSC(b) REG((b) + 0x28u)
#define TIM_ARR(b) REG((b) + 0x2Cu)

/* I2C1 (APB1) */
#define I2C1_BASE 0x40005400u
#define I2C_CR1(b) REG((b) + 0x00u)
#define I2C_CR2(b) REG((b) + 0x04u)
#define I2C_DR(b) REG((b) + 0x10u)
#define I2C_SR1(b) REG((b) + 0x14u)
#define I2C_SR2(b) REG((b) + 0x18u)
#define I2C_CCR(b) REG((b) + 0x1Cu)
#define I2C_TRISE(b) REG((b) + 0x20u)
#define I2C_CR1_PE (1u << 0)
#define I2C_CR1_START (1u << 8)
#define I2C_CR1_STOP (1u << 9)
#define I2C_CR1_ACK (1u << 10)
#define I2C_CR1_SWRST (1u << 15)
#define I2C_SR1_SB (1u << 0)
#define I2C_SR1_ADDR (1u << 1)
#define I2C_SR1_BTF (1u << 2)
#define I2C_SR1_RXNE (1u << 6)
#define I2C_SR1_TXE (1u << 7)
#define I2C_SR1_AF (1u << 10)

/* SPI1 (APB2) */
#define SPI1_BASE 0x40013000u
#define SPI_CR1(b) REG((b) + 0x00u)
#define SPI_SR(b) REG((b) + 0x08u)
#define SPI_DR(b) REG((b) + 0x0Cu)
#define SPI_SR_RXNE (1u << 0)
#define SPI_SR_TXE (1u << 1)

/* NVIC */
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))

/* 96-bit unique device ID */
#define UID_BASE 0x1FFF7A10u

#endif

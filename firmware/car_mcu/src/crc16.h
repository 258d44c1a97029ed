/* CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR.
 * The check value over the ASCII bytes "123456789" is 0x29B1. */
#ifndef CAR_MCU_CRC16_H
#define CAR_MCU_CRC16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint16_t crc16(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif

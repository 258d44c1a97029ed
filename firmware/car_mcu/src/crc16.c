#include "crc16.h"

#define CRC16_INIT 0xFFFFu
#define CRC16_POLY 0x1021u

/* Bitwise on purpose: no 512-byte table, which matters on an AVR with 2 KiB of RAM, and a
 * frame has at most 35 checked bytes. */
uint16_t crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = CRC16_INIT;
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned bit;
        /* Widen before shifting: where int has 16 bits, a promoted byte << 8 could overflow. */
        crc ^= (uint16_t)((unsigned)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            if (crc & 0x8000u) {
                crc = (uint16_t)(((unsigned)crc << 1) ^ CRC16_POLY);
            } else {
                crc = (uint16_t)((unsigned)crc << 1);
            }
        }
    }
    return crc;
}

/* The messages of the serial protocol (docs/serial-protocol.md): types, payload lengths,
 * flags, status bits, and the little-endian field helpers. The Python reference is
 * car/mcu/protocol.py. */
#ifndef CAR_MCU_PROTOCOL_H
#define CAR_MCU_PROTOCOL_H

#include <stdint.h>

#define PROTOCOL_VERSION 1u

/* Host -> MCU */
#define MSG_DRIVE 0x01u
#define MSG_CONFIG 0x02u
#define MSG_PING 0x03u
/* MCU -> host */
#define MSG_TELEMETRY 0x81u
#define MSG_CONFIG_ACK 0x82u
#define MSG_PONG 0x83u

/* Payload lengths in bytes */
#define DRIVE_LEN 5u      /* steering_us u16, throttle_us u16, flags u8 */
#define CONFIG_LEN 15u    /* timeout_ms u16, steer min/neutral/max u16, thr min/neutral/max
                             u16, cfg_flags u8 */
#define PING_LEN 0u
#define TELEMETRY_LEN 12u /* rc_steering_us u16, rc_throttle_us u16, battery_mv u16,
                             status u8, last_seq u8, applied_steering_us u16,
                             applied_throttle_us u16 */
#define CONFIG_ACK_LEN 1u /* acked_seq u8 */
#define FIRMWARE_NAME_MAX 16u
#define PONG_LEN_MAX (1u + FIRMWARE_NAME_MAX) /* protocol_version u8, name ASCII */

/* DRIVE flags */
#define DRIVE_ENGAGE 0x01u
#define DRIVE_ESTOP 0x02u
/* CONFIG flags */
#define CFG_RC_PASSTHROUGH 0x01u
/* TELEMETRY status bits */
#define STATUS_FAILSAFE 0x01u
#define STATUS_RC_PASSTHROUGH 0x02u
#define STATUS_ESTOP 0x04u
#define STATUS_CONFIGURED 0x08u

/* Multi-byte fields are little-endian. Bytes are widened to unsigned before shifting: where
 * int has 16 bits (AVR), a promoted byte << 8 could overflow a signed int. */
static inline uint16_t le16_get(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] | ((unsigned)p[1] << 8));
}

static inline void le16_put(uint8_t *p, uint16_t value)
{
    p[0] = (uint8_t)(value & 0xFFu);
    p[1] = (uint8_t)(value >> 8);
}

#endif

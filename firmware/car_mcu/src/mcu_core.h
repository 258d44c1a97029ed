/* The MCU's rules as a state machine, with no I/O and no clock of its own: the sketch feeds it
 * received bytes and the time, reads the pulses to apply, and sends what it returns. It
 * mirrors car/mcu/core.py (McuCore) and is tested against it (tests/test_firmware.py).
 *
 * - boot: FAILSAFE, outputs neutral, limits 1000/1500/2000 us, watchdog 250 ms;
 * - a DRIVE whose SEQ equals the last applied DRIVE's SEQ is a duplicate, ignored entirely:
 *   it does not feed the watchdog, so a host stuck resending one frame is not alive;
 * - any other DRIVE feeds the watchdog and clears FAILSAFE. ESTOP latches neutral, and only
 *   a DRIVE with flags == 0 clears the latch. ENGAGE (not latched) applies the pulses clamped
 *   to the limits; ENGAGE clear gives neutral;
 * - no new DRIVE for timeout_ms: FAILSAFE, neutral; or, with RC passthrough configured, an RC
 *   signal on both channels and no e-stop latched, the RC pulses clamped to the limits;
 * - a CONFIG with consistent values (pulses 500-2500 us, min < neutral < max, timeout
 *   20-5000 ms) is applied and answered by CONFIG_ACK; any other is counted, not answered;
 * - PING is answered by PONG. The MCU's frames carry its own SEQ counter, one per frame sent.
 *
 * Times are uint32_t milliseconds (Arduino millis()); the watchdog compares them by unsigned
 * subtraction, so it keeps working when the counter wraps after 49.7 days.
 */
#ifndef CAR_MCU_CORE_H
#define CAR_MCU_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest frame the MCU sends: a PONG with the longest firmware name. */
#define MCU_REPLY_MAX (FRAME_OVERHEAD + PONG_LEN_MAX)
#define MCU_TELEMETRY_SIZE (FRAME_OVERHEAD + TELEMETRY_LEN)

/* A tx buffer this large always holds the replies to n received bytes: each reply answers a
 * frame of at least FRAME_OVERHEAD bytes, all taken from those n bytes and the at most
 * FRAME_MAX_SIZE - 1 bytes the parser held before. MCU_CORE_TX_BOUND(1) is 120. */
#define MCU_CORE_TX_BOUND(n) ((((n) + FRAME_MAX_SIZE - 1u) / FRAME_OVERHEAD) * MCU_REPLY_MAX)

typedef struct {
    uint16_t min_us;
    uint16_t neutral_us;
    uint16_t max_us;
} mcu_range_t;

typedef struct {
    mcu_range_t steering;
    mcu_range_t throttle;
    uint16_t timeout_ms;
    bool rc_passthrough; /* drive from the RC receiver while in FAILSAFE */
} mcu_limits_t;

typedef struct {
    uint16_t steering_us;
    uint16_t throttle_us;
} mcu_pulses_t;

typedef struct {
    uint32_t drives;          /* DRIVEs applied */
    uint32_t duplicates;      /* DRIVEs ignored for a repeated SEQ */
    uint32_t configs;         /* CONFIGs received, valid or not */
    uint32_t config_rejected;
    uint32_t pings;
    uint32_t watchdog_trips;
    uint32_t tx_dropped;      /* frames not written: the caller's buffer was too small */
} mcu_counts_t;

typedef struct {
    frame_parser_t parser;
    mcu_limits_t limits;
    mcu_counts_t counts;
    mcu_pulses_t rc;      /* the receiver's input, 0 = no signal */
    mcu_pulses_t command; /* the last ENGAGE pulses, unclamped */
    uint32_t last_drive_ms;
    uint16_t battery_mv;
    uint8_t last_seq;     /* SEQ of the last applied DRIVE; 0 before any */
    bool has_last_seq;    /* false before any DRIVE: a first DRIVE with SEQ 0 is no duplicate */
    uint8_t tx_seq;
    bool configured;
    bool failsafe;
    bool estop;           /* the e-stop latch */
    bool engaged;
    uint8_t firmware_len;
    char firmware[FIRMWARE_NAME_MAX];
} mcu_core_t;

/* Boot state. firmware is the name PONG carries, cut to FIRMWARE_NAME_MAX ASCII bytes. */
void mcu_core_init(mcu_core_t *core, const char *firmware);

/* A parser that takes the host -> MCU frames, as the core's own does. */
void mcu_core_init_parser(frame_parser_t *parser);

/* The RC receiver's pulses now (0 where a channel has no signal), and the battery. */
void mcu_core_set_rc(mcu_core_t *core, uint16_t steering_us, uint16_t throttle_us);
void mcu_core_set_battery(mcu_core_t *core, uint16_t battery_mv);

/* Bytes from the host, received at now_ms. Writes the replies (CONFIG_ACK, PONG) to tx and
 * returns their size; a reply that does not fit in cap is dropped and counted in tx_dropped
 * (MCU_CORE_TX_BOUND(len) bytes always suffice). */
size_t mcu_core_receive(mcu_core_t *core, const uint8_t *data, size_t len, uint32_t now_ms,
                        uint8_t *tx, size_t cap);

/* The watchdog: FAILSAFE once no new DRIVE came for timeout_ms. Call it every loop. */
void mcu_core_tick(mcu_core_t *core, uint32_t now_ms);

/* The pulses for the steering servo and the ESC now. */
mcu_pulses_t mcu_core_outputs(const mcu_core_t *core);

/* The TELEMETRY status bits (STATUS_*). */
uint8_t mcu_core_status(const mcu_core_t *core);

/* Writes one TELEMETRY frame (MCU_TELEMETRY_SIZE bytes) and returns its size, or 0 if cap is
 * too small. */
size_t mcu_core_make_telemetry(mcu_core_t *core, uint8_t *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif

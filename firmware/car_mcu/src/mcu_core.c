#include "mcu_core.h"

#include <string.h>

#define BOOT_MIN_US 1000u
#define BOOT_NEUTRAL_US 1500u
#define BOOT_MAX_US 2000u
#define BOOT_TIMEOUT_MS 250u
#define PULSE_MIN_US 500u
#define PULSE_MAX_US 2500u
#define TIMEOUT_MIN_MS 20u
#define TIMEOUT_MAX_MS 5000u

static const frame_accept_t HOST_FRAMES[] = {
    {MSG_DRIVE, DRIVE_LEN, DRIVE_LEN},
    {MSG_CONFIG, CONFIG_LEN, CONFIG_LEN},
    {MSG_PING, PING_LEN, PING_LEN},
};

/* Where mcu_core_receive's replies go while the parser delivers frames. */
typedef struct {
    mcu_core_t *core;
    uint32_t now_ms;
    uint8_t *tx;
    size_t cap;
    size_t len;
} reply_sink_t;

/* ------------------------------------------------------------------------------ setup */

void mcu_core_init_parser(frame_parser_t *parser)
{
    frame_parser_init(parser, HOST_FRAMES, sizeof HOST_FRAMES / sizeof HOST_FRAMES[0]);
}

void mcu_core_init(mcu_core_t *core, const char *firmware)
{
    static const mcu_range_t boot_range = {BOOT_MIN_US, BOOT_NEUTRAL_US, BOOT_MAX_US};
    size_t name_len = 0;

    memset(core, 0, sizeof *core);
    mcu_core_init_parser(&core->parser);
    core->limits.steering = boot_range;
    core->limits.throttle = boot_range;
    core->limits.timeout_ms = BOOT_TIMEOUT_MS;
    core->failsafe = true;
    core->command.steering_us = BOOT_NEUTRAL_US;
    core->command.throttle_us = BOOT_NEUTRAL_US;
    while (name_len < FIRMWARE_NAME_MAX && firmware[name_len] != '\0') {
        name_len++;
    }
    memcpy(core->firmware, firmware, name_len);
    core->firmware_len = (uint8_t)name_len;
}

void mcu_core_set_rc(mcu_core_t *core, uint16_t steering_us, uint16_t throttle_us)
{
    core->rc.steering_us = steering_us;
    core->rc.throttle_us = throttle_us;
}

void mcu_core_set_battery(mcu_core_t *core, uint16_t battery_mv)
{
    core->battery_mv = battery_mv;
}

/* ---------------------------------------------------------------------------- sending */

/* Frames one message with the MCU's own SEQ, which advances only for a frame written. */
static size_t send_frame(mcu_core_t *core, uint8_t type, const uint8_t *payload,
                         size_t len, uint8_t *out, size_t cap)
{
    size_t size = frame_encode(type, core->tx_seq, payload, len, out, cap);
    if (size == 0) {
        core->counts.tx_dropped++;
    } else {
        core->tx_seq++; /* uint8_t: wraps at 256 */
    }
    return size;
}

static void reply(reply_sink_t *sink, uint8_t type, const uint8_t *payload, size_t len)
{
    sink->len += send_frame(sink->core, type, payload, len, &sink->tx[sink->len],
                            sink->cap - sink->len);
}

/* ---------------------------------------------------------------------------- outputs */

static uint16_t clamp(uint16_t value, const mcu_range_t *range)
{
    if (value < range->min_us) {
        return range->min_us;
    }
    if (value > range->max_us) {
        return range->max_us;
    }
    return value;
}

static bool passing_through(const mcu_core_t *core)
{
    return core->failsafe && core->limits.rc_passthrough && !core->estop
           && core->rc.steering_us != 0 && core->rc.throttle_us != 0;
}

static mcu_pulses_t clamped(const mcu_core_t *core, mcu_pulses_t pulses)
{
    mcu_pulses_t out;
    out.steering_us = clamp(pulses.steering_us, &core->limits.steering);
    out.throttle_us = clamp(pulses.throttle_us, &core->limits.throttle);
    return out;
}

mcu_pulses_t mcu_core_outputs(const mcu_core_t *core)
{
    mcu_pulses_t neutral;
    if (passing_through(core)) {
        return clamped(core, core->rc);
    }
    if (core->failsafe || core->estop || !core->engaged) {
        neutral.steering_us = core->limits.steering.neutral_us;
        neutral.throttle_us = core->limits.throttle.neutral_us;
        return neutral;
    }
    return clamped(core, core->command);
}

uint8_t mcu_core_status(const mcu_core_t *core)
{
    unsigned status = 0;
    if (core->failsafe) {
        status |= STATUS_FAILSAFE;
    }
    if (passing_through(core)) {
        status |= STATUS_RC_PASSTHROUGH;
    }
    if (core->estop) {
        status |= STATUS_ESTOP;
    }
    if (core->configured) {
        status |= STATUS_CONFIGURED;
    }
    return (uint8_t)status;
}

size_t mcu_core_make_telemetry(mcu_core_t *core, uint8_t *buf, size_t cap)
{
    uint8_t payload[TELEMETRY_LEN];
    mcu_pulses_t applied = mcu_core_outputs(core);

    le16_put(&payload[0], core->rc.steering_us);
    le16_put(&payload[2], core->rc.throttle_us);
    le16_put(&payload[4], core->battery_mv);
    payload[6] = mcu_core_status(core);
    payload[7] = core->last_seq; /* 0 before any DRIVE */
    le16_put(&payload[8], applied.steering_us);
    le16_put(&payload[10], applied.throttle_us);
    return send_frame(core, MSG_TELEMETRY, payload, sizeof payload, buf, cap);
}

/* ---------------------------------------------------------------------------- the watchdog */

void mcu_core_tick(mcu_core_t *core, uint32_t now_ms)
{
    /* Unsigned subtraction: the elapsed time is right across a millis() wrap. */
    uint32_t silent_ms = (uint32_t)(now_ms - core->last_drive_ms);
    if (!core->failsafe && silent_ms >= core->limits.timeout_ms) {
        core->failsafe = true;
        core->engaged = false;
        core->counts.watchdog_trips++;
    }
}

/* ---------------------------------------------------------------------------- messages */

static void on_drive(mcu_core_t *core, const frame_t *frame, uint32_t now_ms)
{
    const uint8_t flags = frame->payload[4];

    if (core->has_last_seq && frame->seq == core->last_seq) {
        core->counts.duplicates++;
        return;
    }
    core->counts.drives++;
    core->last_seq = frame->seq;
    core->has_last_seq = true;
    core->last_drive_ms = now_ms;
    core->failsafe = false;
    if (flags & DRIVE_ESTOP) {
        core->estop = true;
    } else if (core->estop && flags == 0) {
        core->estop = false;
    }
    core->engaged = (flags & DRIVE_ENGAGE) != 0 && !core->estop;
    if (core->engaged) {
        core->command.steering_us = le16_get(&frame->payload[0]);
        core->command.throttle_us = le16_get(&frame->payload[2]);
    }
}

static mcu_range_t decode_range(const uint8_t *p)
{
    mcu_range_t range;
    range.min_us = le16_get(&p[0]);
    range.neutral_us = le16_get(&p[2]);
    range.max_us = le16_get(&p[4]);
    return range;
}

static mcu_limits_t decode_config(const uint8_t *payload)
{
    mcu_limits_t limits;
    limits.timeout_ms = le16_get(&payload[0]);
    limits.steering = decode_range(&payload[2]);
    limits.throttle = decode_range(&payload[8]);
    limits.rc_passthrough = (payload[14] & CFG_RC_PASSTHROUGH) != 0;
    return limits;
}

static bool range_is_valid(const mcu_range_t *r)
{
    return r->min_us >= PULSE_MIN_US && r->max_us <= PULSE_MAX_US
           && r->min_us < r->neutral_us && r->neutral_us < r->max_us;
}

static bool limits_are_valid(const mcu_limits_t *limits)
{
    return limits->timeout_ms >= TIMEOUT_MIN_MS && limits->timeout_ms <= TIMEOUT_MAX_MS
           && range_is_valid(&limits->steering) && range_is_valid(&limits->throttle);
}

static void on_config(reply_sink_t *sink, const frame_t *frame)
{
    mcu_core_t *core = sink->core;
    const mcu_limits_t limits = decode_config(frame->payload);
    const uint8_t acked_seq = frame->seq;

    core->counts.configs++;
    if (!limits_are_valid(&limits)) {
        core->counts.config_rejected++;
        return;
    }
    core->limits = limits;
    core->configured = true;
    reply(sink, MSG_CONFIG_ACK, &acked_seq, CONFIG_ACK_LEN);
}

static void on_ping(reply_sink_t *sink)
{
    mcu_core_t *core = sink->core;
    uint8_t payload[PONG_LEN_MAX];

    core->counts.pings++;
    payload[0] = PROTOCOL_VERSION;
    memcpy(&payload[1], core->firmware, core->firmware_len);
    reply(sink, MSG_PONG, payload, 1u + core->firmware_len);
}

/* The parser's handler: the parser has checked the type and the payload length. */
static void on_frame(void *ctx, const frame_t *frame)
{
    reply_sink_t *sink = (reply_sink_t *)ctx;
    switch (frame->type) {
    case MSG_DRIVE:
        on_drive(sink->core, frame, sink->now_ms);
        break;
    case MSG_CONFIG:
        on_config(sink, frame);
        break;
    case MSG_PING:
        on_ping(sink);
        break;
    default: /* the parser takes no other type */
        break;
    }
}

size_t mcu_core_receive(mcu_core_t *core, const uint8_t *data, size_t len, uint32_t now_ms,
                        uint8_t *tx, size_t cap)
{
    reply_sink_t sink;
    size_t i;

    sink.core = core;
    sink.now_ms = now_ms;
    sink.tx = tx;
    sink.cap = cap;
    sink.len = 0;
    for (i = 0; i < len; i++) {
        frame_parser_feed(&core->parser, data[i], on_frame, &sink);
    }
    return sink.len;
}

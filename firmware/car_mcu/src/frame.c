#include "frame.h"

#include <stdbool.h>
#include <string.h>

#include "crc16.h"
#include "protocol.h"

#define HEADER_LEN 3u  /* sync 2, LEN */
#define PAYLOAD_AT 5u  /* sync 2, LEN, TYPE, SEQ */
#define CHECKED_AT 2u  /* the CRC covers LEN TYPE SEQ PAYLOAD */

size_t frame_encode(uint8_t type, uint8_t seq, const uint8_t *payload, size_t len,
                    uint8_t *out, size_t cap)
{
    if (len > FRAME_MAX_PAYLOAD || cap < FRAME_OVERHEAD + len) {
        return 0;
    }
    out[0] = FRAME_SYNC0;
    out[1] = FRAME_SYNC1;
    out[2] = (uint8_t)len;
    out[3] = type;
    out[4] = seq;
    if (len > 0) {
        memcpy(&out[PAYLOAD_AT], payload, len);
    }
    le16_put(&out[PAYLOAD_AT + len], crc16(&out[CHECKED_AT], HEADER_LEN + len));
    return FRAME_OVERHEAD + len;
}

void frame_parser_init(frame_parser_t *parser, const frame_accept_t *accept,
                       size_t accept_count)
{
    memset(parser, 0, sizeof *parser);
    parser->accept = accept;
    parser->accept_count = accept_count;
}

size_t frame_parser_pending(const frame_parser_t *parser)
{
    return parser->len;
}

static void drop_front(frame_parser_t *parser, uint8_t count)
{
    parser->len = (uint8_t)(parser->len - count);
    memmove(parser->buf, &parser->buf[count], parser->len);
}

/* How many leading bytes cannot start a frame: those before the first 0xAA 0x55, or, with
 * no 0xAA 0x55 at all, every byte but a trailing 0xAA. */
static uint8_t unusable_prefix(const frame_parser_t *parser)
{
    uint8_t i;
    for (i = 0; i + 1u < parser->len; i++) {
        if (parser->buf[i] == FRAME_SYNC0 && parser->buf[i + 1u] == FRAME_SYNC1) {
            return i;
        }
    }
    if (parser->len > 0 && parser->buf[parser->len - 1u] == FRAME_SYNC0) {
        return (uint8_t)(parser->len - 1u);
    }
    return parser->len;
}

static const frame_accept_t *accept_rule(const frame_parser_t *parser, uint8_t type)
{
    size_t i;
    for (i = 0; i < parser->accept_count; i++) {
        if (parser->accept[i].type == type) {
            return &parser->accept[i];
        }
    }
    return NULL;
}

/* The held bytes start with a whole frame whose CRC checked out: deliver it or count why not. */
static void deliver(frame_parser_t *parser, frame_handler_t on_frame, void *ctx)
{
    frame_t frame;
    const frame_accept_t *rule;

    frame.len = parser->buf[2];
    frame.type = parser->buf[3];
    frame.seq = parser->buf[4];
    frame.payload = &parser->buf[PAYLOAD_AT];
    rule = accept_rule(parser, frame.type);
    if (rule == NULL) {
        parser->counts.unknown_type++;
    } else if (frame.len < rule->min_len || frame.len > rule->max_len) {
        parser->counts.bad_length++;
    } else {
        parser->counts.frames++;
        on_frame(ctx, &frame);
    }
}

static bool crc_matches(const frame_parser_t *parser, uint8_t payload_len)
{
    const uint8_t *crc_at = &parser->buf[PAYLOAD_AT + payload_len];
    return crc16(&parser->buf[CHECKED_AT], HEADER_LEN + payload_len) == le16_get(crc_at);
}

void frame_parser_feed(frame_parser_t *parser, uint8_t byte, frame_handler_t on_frame,
                       void *ctx)
{
    /* Room is certain: between calls the parser holds at most an incomplete frame, one byte
     * short of FRAME_MAX_SIZE. */
    parser->buf[parser->len++] = byte;
    for (;;) {
        uint8_t skip = unusable_prefix(parser);
        uint8_t payload_len;
        uint8_t total;

        if (skip > 0) {
            parser->counts.skipped_bytes += skip;
            drop_front(parser, skip);
        }
        if (parser->len < HEADER_LEN) {
            return; /* nothing, a lone 0xAA, or a bare 0xAA 0x55 */
        }
        payload_len = parser->buf[2];
        if (payload_len > FRAME_MAX_PAYLOAD) {
            parser->counts.bad_length++;
            drop_front(parser, 1); /* resume the search after this 0xAA */
            continue;
        }
        total = (uint8_t)(FRAME_OVERHEAD + payload_len);
        if (parser->len < total) {
            return;
        }
        if (!crc_matches(parser, payload_len)) {
            parser->counts.bad_crc++;
            drop_front(parser, 1);
            continue;
        }
        deliver(parser, on_frame, ctx);
        drop_front(parser, total);
    }
}

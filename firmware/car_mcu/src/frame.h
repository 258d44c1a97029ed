/* Framing: 0xAA 0x55 | LEN | TYPE | SEQ | PAYLOAD (LEN bytes) | CRC16 little-endian, the CRC
 * (crc16.h) taken over LEN TYPE SEQ PAYLOAD.
 *
 * The streaming parser follows the rules of car/mcu/protocol.py's FrameParser byte for byte,
 * counters included, so any split of a byte stream gives the same frames and counts:
 *
 * - bytes before 0xAA 0x55 are skipped (counted in skipped_bytes); a trailing lone 0xAA is
 *   kept, since the next byte may be its 0x55;
 * - a LEN above FRAME_MAX_PAYLOAD is a corrupt header: counted as a bad length, and the
 *   search for a frame start resumes at the byte after its 0xAA;
 * - a bad CRC is counted, and the search resumes at the byte after its 0xAA, so a corrupted
 *   frame cannot hide a good frame that starts inside it;
 * - a good CRC with a type not in the accept table is an unknown type; with a LEN outside
 *   that type's range, a bad length. Either is counted and the whole frame dropped.
 *
 * The 0xAA that starts a bad header or a bad-CRC frame is not counted as skipped, while the
 * bytes after it that are searched past are (as in the Python parser).
 */
#ifndef CAR_MCU_FRAME_H
#define CAR_MCU_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FRAME_SYNC0 0xAAu
#define FRAME_SYNC1 0x55u
#define FRAME_MAX_PAYLOAD 32u
#define FRAME_OVERHEAD 7u /* sync 2, LEN, TYPE, SEQ, CRC 2 */
#define FRAME_MAX_SIZE (FRAME_OVERHEAD + FRAME_MAX_PAYLOAD)

/* A frame type the parser takes, with its payload length range. */
typedef struct {
    uint8_t type;
    uint8_t min_len;
    uint8_t max_len;
} frame_accept_t;

typedef struct {
    uint32_t frames;        /* frames delivered */
    uint32_t bad_crc;
    uint32_t bad_length;    /* LEN above FRAME_MAX_PAYLOAD, or outside its type's range */
    uint32_t unknown_type;
    uint32_t skipped_bytes; /* bytes that were not the start of any frame */
} frame_counts_t;

/* A checked frame. payload points into the parser: valid only during the handler call. */
typedef struct {
    uint8_t type;
    uint8_t seq;
    uint8_t len;
    const uint8_t *payload;
} frame_t;

/* Called once per delivered frame. It must not feed the parser that calls it. */
typedef void (*frame_handler_t)(void *ctx, const frame_t *frame);

typedef struct {
    const frame_accept_t *accept;
    size_t accept_count;
    frame_counts_t counts;
    uint8_t len;                 /* bytes held in buf */
    uint8_t buf[FRAME_MAX_SIZE]; /* a frame start, or a lone trailing 0xAA */
} frame_parser_t;

/* Writes one frame into out and returns its size: FRAME_OVERHEAD + len. Returns 0, writing
 * nothing, when len exceeds FRAME_MAX_PAYLOAD or the frame does not fit in cap bytes. */
size_t frame_encode(uint8_t type, uint8_t seq, const uint8_t *payload, size_t len,
                    uint8_t *out, size_t cap);

/* accept (accept_count entries) must outlive the parser. */
void frame_parser_init(frame_parser_t *parser, const frame_accept_t *accept,
                       size_t accept_count);

/* Feeds one received byte. on_frame is called for each frame it completes, which can be
 * several: after a resync the held bytes may contain whole frames. */
void frame_parser_feed(frame_parser_t *parser, uint8_t byte, frame_handler_t on_frame,
                       void *ctx);

/* Bytes held waiting for the rest of a frame. */
size_t frame_parser_pending(const frame_parser_t *parser);

#ifdef __cplusplus
}
#endif

#endif

/* Test harness for the firmware core, built with the host compiler by tests/test_firmware.py.
 *
 * Reads commands on stdin, one a line, and prints results on stdout. The script commands are
 * those of tests/mcu_script.py, with the same output lines, so the C core and the Python
 * core can be run on the same script and their outputs compared:
 *
 *   rc S T        the RC receiver now reads S, T us (0 0: no signal)
 *   bat MV        the battery now reads MV millivolts
 *   rx T [HEX]    the bytes HEX arrive at T ms          -> tx HEX   (the replies; tx - for none)
 *   tick T        run the watchdog at T ms
 *   state         -> state STEER_US THR_US STATUS LAST_SEQ   (LAST_SEQ -1 before any DRIVE)
 *   telemetry     -> tx HEX   (one TELEMETRY frame)
 *   counts        -> counts FRAMES BAD_CRC BAD_LENGTH UNKNOWN_TYPE SKIPPED DRIVES DUPLICATES
 *                           CONFIGS CONFIG_REJECTED PINGS WATCHDOG_TRIPS
 *
 * Times are uint32 milliseconds, as millis() gives them: the watchdog test across a wrap
 * uses values near 4294967295. The core's firmware name is "car-mcu", as run_script's.
 *
 * Commands of the harness alone:
 *
 *   reset             -> reset   (the core back to its boot state; one process can run many
 *                                 scripts, and the echoed line separates their outputs)
 *   crc [HEX]         -> crc XXXX   (CRC-16/CCITT-FALSE of the bytes, 4 hex digits)
 *   encode TYPE SEQ [HEX]   -> encoded HEX   (one frame; TYPE and SEQ decimal)
 *   parse [HEX]       a fresh host -> MCU parser fed the bytes one at a time; prints
 *                     -> frame TYPE SEQ PAYLOAD_HEX   for each frame (PAYLOAD_HEX - if empty)
 *                     -> parsed FRAMES BAD_CRC BAD_LENGTH UNKNOWN_TYPE SKIPPED PENDING
 *
 * Hex is case-insensitive with no separators. A malformed command prints a message on
 * stderr and exits with status 2.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc16.h"
#include "mcu_core.h"

#define FIRMWARE_NAME "car-mcu"
#define LINE_MAX_CHARS 16384
#define BYTES_MAX (LINE_MAX_CHARS / 2)
#define WORDS_MAX 8

static mcu_core_t core;
static uint8_t bytes[BYTES_MAX];
static uint8_t tx[MCU_CORE_TX_BOUND(BYTES_MAX)];

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "harness: %s: %s\n", what, detail);
    exit(2);
}

static unsigned long number(const char *word, unsigned long max)
{
    char *end;
    unsigned long value;

    if (word == NULL) {
        fail("missing argument", "a number");
    }
    value = strtoul(word, &end, 10);
    if (*word == '-' || *end != '\0' || end == word || value > max) {
        fail("bad number", word);
    }
    return value;
}

static uint32_t millis_arg(const char *word)
{
    return (uint32_t)number(word, UINT32_MAX);
}

static uint16_t u16_arg(const char *word)
{
    return (uint16_t)number(word, UINT16_MAX);
}

static uint8_t u8_arg(const char *word)
{
    return (uint8_t)number(word, UINT8_MAX);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The bytes of HEX into the shared buffer; an absent word is no bytes. */
static size_t hex_arg(const char *word)
{
    size_t len = 0;

    if (word == NULL) {
        return 0;
    }
    if (strlen(word) % 2 != 0) {
        fail("odd number of hex digits", word);
    }
    for (; word[0] != '\0'; word += 2) {
        int high = hex_digit(word[0]);
        int low = hex_digit(word[1]);
        if (high < 0 || low < 0) {
            fail("bad hex", word);
        }
        bytes[len++] = (uint8_t)(high << 4 | low);
    }
    return len;
}

static void print_hex(const uint8_t *data, size_t len)
{
    size_t i;
    if (len == 0) {
        fputs("-", stdout);
    }
    for (i = 0; i < len; i++) {
        printf("%02x", data[i]);
    }
}

static void print_tx(const uint8_t *data, size_t len)
{
    fputs("tx ", stdout);
    print_hex(data, len);
    putchar('\n');
}

/* ---------------------------------------------------------------- the script commands */

static void cmd_rc(char **args)
{
    mcu_core_set_rc(&core, u16_arg(args[0]), u16_arg(args[1]));
}

static void cmd_bat(char **args)
{
    mcu_core_set_battery(&core, u16_arg(args[0]));
}

static void cmd_rx(char **args)
{
    uint32_t now_ms = millis_arg(args[0]);
    size_t len = hex_arg(args[1]);
    /* Exactly the documented bound, so a wrong MCU_CORE_TX_BOUND drops replies and shows. */
    print_tx(tx, mcu_core_receive(&core, bytes, len, now_ms, tx, MCU_CORE_TX_BOUND(len)));
}

static void cmd_tick(char **args)
{
    mcu_core_tick(&core, millis_arg(args[0]));
}

static void cmd_state(char **args)
{
    mcu_pulses_t out = mcu_core_outputs(&core);
    (void)args;
    printf("state %u %u %u %d\n", (unsigned)out.steering_us, (unsigned)out.throttle_us,
           (unsigned)mcu_core_status(&core), core.has_last_seq ? (int)core.last_seq : -1);
}

static void cmd_telemetry(char **args)
{
    (void)args;
    print_tx(tx, mcu_core_make_telemetry(&core, tx, MCU_TELEMETRY_SIZE));
}

static void cmd_counts(char **args)
{
    const frame_counts_t *pc = &core.parser.counts;
    const mcu_counts_t *cc = &core.counts;
    (void)args;
    printf("counts %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32, pc->frames,
           pc->bad_crc, pc->bad_length, pc->unknown_type, pc->skipped_bytes);
    printf(" %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 "\n",
           cc->drives, cc->duplicates, cc->configs, cc->config_rejected, cc->pings,
           cc->watchdog_trips);
}

/* ---------------------------------------------------------------- the harness's own */

static void cmd_reset(char **args)
{
    (void)args;
    mcu_core_init(&core, FIRMWARE_NAME);
    puts("reset");
}

static void cmd_crc(char **args)
{
    size_t len = hex_arg(args[0]);
    printf("crc %04x\n", (unsigned)crc16(bytes, len));
}

static void cmd_encode(char **args)
{
    uint8_t type = u8_arg(args[0]);
    uint8_t seq = u8_arg(args[1]);
    size_t len = hex_arg(args[2]);
    size_t size = frame_encode(type, seq, bytes, len, tx, sizeof tx);
    if (size == 0) {
        fail("cannot encode", "payload too long");
    }
    fputs("encoded ", stdout);
    print_hex(tx, size);
    putchar('\n');
}

static void print_frame(void *ctx, const frame_t *frame)
{
    (void)ctx;
    printf("frame %u %u ", (unsigned)frame->type, (unsigned)frame->seq);
    print_hex(frame->payload, frame->len);
    putchar('\n');
}

static void cmd_parse(char **args)
{
    frame_parser_t parser;
    const frame_counts_t *c = &parser.counts;
    size_t len = hex_arg(args[0]);
    size_t i;

    mcu_core_init_parser(&parser);
    for (i = 0; i < len; i++) {
        frame_parser_feed(&parser, bytes[i], print_frame, NULL);
    }
    printf("parsed %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 " %lu\n",
           c->frames, c->bad_crc, c->bad_length, c->unknown_type, c->skipped_bytes,
           (unsigned long)frame_parser_pending(&parser));
}

/* ---------------------------------------------------------------- the loop */

typedef struct {
    const char *name;
    void (*run)(char **args);
} command_t;

static const command_t COMMANDS[] = {
    {"rc", cmd_rc},       {"bat", cmd_bat},         {"rx", cmd_rx},
    {"tick", cmd_tick},   {"state", cmd_state},     {"telemetry", cmd_telemetry},
    {"counts", cmd_counts}, {"reset", cmd_reset},   {"crc", cmd_crc},
    {"encode", cmd_encode}, {"parse", cmd_parse},
};

/* Splits line into words; the slots after the last word stay NULL (a missing argument). */
static size_t split(char *line, char *words[WORDS_MAX + 1])
{
    size_t count = 0;
    char *word = strtok(line, " \t\r\n");
    memset(words, 0, (WORDS_MAX + 1) * sizeof words[0]);
    while (word != NULL && count < WORDS_MAX) {
        words[count++] = word;
        word = strtok(NULL, " \t\r\n");
    }
    return count;
}

static void run_line(char *line)
{
    char *words[WORDS_MAX + 1];
    size_t i;

    if (split(line, words) == 0) {
        return;
    }
    for (i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(words[0], COMMANDS[i].name) == 0) {
            COMMANDS[i].run(&words[1]);
            return;
        }
    }
    fail("unknown command", words[0]);
}

int main(void)
{
    static char line[LINE_MAX_CHARS + 2];

    mcu_core_init(&core, FIRMWARE_NAME);
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strchr(line, '\n') == NULL && !feof(stdin)) {
            fail("line too long", "more than 16384 characters");
        }
        run_line(line);
    }
    return 0;
}

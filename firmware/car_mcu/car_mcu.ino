/* car_mcu: the reference firmware for the car's microcontroller.
 *
 * The host (the car computer) sends DRIVE, CONFIG and PING frames over serial at 115200 8N1;
 * this sketch drives the steering servo and the ESC, measures the RC receiver and the
 * battery, and sends TELEMETRY at 50 Hz. Every rule (failsafe, watchdog, e-stop latch,
 * passthrough, CONFIG checks) lives in the portable core in src/, tested on the host by
 * tests/test_firmware.py; this file is only the board's I/O around it, plus two guards of its
 * own that keep loop() running (see "Safety behaviour" in firmware/README.md):
 * - serial writes never wait: a frame is written only whole and only when the transmit buffer
 *   has room for it now, otherwise it is dropped and counted (core.counts.tx_dropped). A host
 *   that stops reading a native-USB port (RP2040, Teensy, ESP32-S2/S3 USB CDC, Leonardo) would
 *   otherwise stall loop() inside Serial.write(), and with it the protocol watchdog;
 * - a hardware watchdog resets the board, which boots to neutral, if loop() stops anyway.
 *
 * Targets: AVR (Uno, Nano), RP2040 (arduino-pico core), ESP32 (ESP32Servo library), Teensy.
 * Pins per board are below and in firmware/README.md.
 */
#include <Arduino.h>
#if defined(ARDUINO_ARCH_ESP32)
#include <ESP32Servo.h>
#else
#include <Servo.h>
#endif

/* The hardware watchdog, per board, in the order of the pins below; firmware/README.md lists
 * each one's timeout. */
#if defined(TEENSYDUINO)
/* Teensy 4.x: WDOG1 through the WDT_T4 library (Watchdog_t4.h); 0.5 s is its shortest
 * timeout. Set CAR_MCU_WDT_T4 to 1 once the library is installed: a missing library then
 * stops the build. At 0 the header is used only if it is already on the include path
 * (PlatformIO's lib_deps): Arduino's library discovery adds a library only for an #include
 * it sees fail, so under arduino-cli and the IDE a __has_include() test never finds it.
 * Other Teensys, or without the library: no hardware watchdog. */
#ifndef CAR_MCU_WDT_T4
#define CAR_MCU_WDT_T4 0
#endif
#if defined(__IMXRT1062__)
#if CAR_MCU_WDT_T4
#include <Watchdog_t4.h>
#define HW_WATCHDOG_WDT_T4
#elif defined(__has_include)
#if __has_include(<Watchdog_t4.h>)
#include <Watchdog_t4.h>
#define HW_WATCHDOG_WDT_T4
#endif
#endif
#endif
#if defined(HW_WATCHDOG_WDT_T4)
#define HW_WATCHDOG_S 0.5
#else
#warning "car_mcu: no hardware watchdog on this Teensy (Teensy 4.x: install WDT_T4, set CAR_MCU_WDT_T4 to 1)"
#endif
#elif defined(ARDUINO_ARCH_AVR)
#include <avr/wdt.h>
#define HW_WATCHDOG_AVR_TIMEOUT WDTO_250MS
#elif defined(ARDUINO_ARCH_RP2040)
#define HW_WATCHDOG_MS 250u
#endif

#include "src/mcu_core.h"

#define FIRMWARE_NAME "car-mcu"
#define SERIAL_BAUD 115200
#define TELEMETRY_PERIOD_MS 20u    /* 50 Hz */
#define RX_BYTES_PER_LOOP 64u      /* bounds one loop's work under a flood of bytes */
#define SERVO_MIN_US 500           /* the widest pulses a CONFIG may set */
#define SERVO_MAX_US 2500
#define RC_PULSE_MIN_US 800u       /* a receiver pulse outside 800-2200 us is noise */
#define RC_PULSE_MAX_US 2200u
#define RC_SIGNAL_TIMEOUT_MS 100u  /* no valid pulse for this long: the channel reads 0 */

/* ---------------------------------------------------------------------------- board pins
 * BATTERY_DIVIDER_TOP/BOTTOM: the resistors from the battery to the ADC pin and from the pin
 * to ground (20k over 10k divides by 3: 15 V full scale at 5 V, 9.9 V at 3.3 V, enough
 * for a 2S LiPo; use a larger ratio for 3S on a 3.3 V board). ADC_REF_MV and ADC_STEPS turn
 * an analogRead() into millivolts at the pin, where the core has no calibrated reading. */
#if defined(TEENSYDUINO) /* before AVR: Teensy 2.0 is an AVR too */
#define STEERING_OUT_PIN 9
#define ESC_OUT_PIN 10
#define RC_STEERING_IN_PIN 2
#define RC_THROTTLE_IN_PIN 3
#define BATTERY_PIN A0
#define ADC_REF_MV 3300u
#elif defined(ARDUINO_ARCH_AVR) /* Uno, Nano: pins 2 and 3 are the external interrupts */
#define STEERING_OUT_PIN 9
#define ESC_OUT_PIN 10
#define RC_STEERING_IN_PIN 2
#define RC_THROTTLE_IN_PIN 3
#define BATTERY_PIN A0
#define ADC_REF_MV 5000u
#elif defined(ARDUINO_ARCH_RP2040) /* Raspberry Pi Pico: GPIO numbers */
#define STEERING_OUT_PIN 14
#define ESC_OUT_PIN 15
#define RC_STEERING_IN_PIN 16
#define RC_THROTTLE_IN_PIN 17
#define BATTERY_PIN A0 /* GPIO 26 */
#define ADC_REF_MV 3300u
#elif defined(ARDUINO_ARCH_ESP32) /* ESP32 DevKit: GPIO numbers */
#define STEERING_OUT_PIN 18
#define ESC_OUT_PIN 19
#define RC_STEERING_IN_PIN 32
#define RC_THROTTLE_IN_PIN 33
#define BATTERY_PIN 34 /* ADC1: usable with Wi-Fi on; read calibrated, no ADC_REF_MV */
#else
#error "car_mcu: no pin assignment for this board; add one above and to firmware/README.md"
#endif
#define ADC_STEPS 1024u /* analogRead() is 10 bits by default on these cores */
#define BATTERY_DIVIDER_TOP 20000u
#define BATTERY_DIVIDER_BOTTOM 10000u

/* An ISR on the ESP32 must sit in IRAM, with what it calls. */
#if defined(ARDUINO_ARCH_ESP32)
#define RC_ISR IRAM_ATTR
#else
#define RC_ISR
#endif

/* One RC receiver channel. The ISR measures each pulse from its rising to its falling edge;
 * the loop takes the last valid width, and 0 once none came for RC_SIGNAL_TIMEOUT_MS. */
struct RcChannel {
    uint8_t pin;
    /* written by the ISR */
    volatile uint32_t rise_us;
    volatile uint16_t width_us; /* the last valid pulse */
    volatile uint8_t pulses;    /* valid pulses so far, wrapping: tells the loop of a new one */
    /* loop only */
    uint8_t seen_pulses;
    uint32_t seen_ms;
    uint16_t value_us; /* what the core gets: 0 = no signal */
};

static mcu_core_t core;
static Servo steering_servo;
static Servo esc;
static RcChannel rc_steering = {RC_STEERING_IN_PIN, 0, 0, 0, 0, 0, 0};
static RcChannel rc_throttle = {RC_THROTTLE_IN_PIN, 0, 0, 0, 0, 0, 0};
static uint32_t telemetry_ms; /* when the last TELEMETRY was due */
#if defined(HW_WATCHDOG_WDT_T4)
static WDT_T4<WDT1> hw_watchdog;
#endif

/* ---------------------------------------------------------------------------- RC input */

static void RC_ISR rc_edge(RcChannel &ch)
{
    const uint32_t now_us = micros();
    uint32_t width_us;

    if (digitalRead(ch.pin) == HIGH) {
        ch.rise_us = now_us;
        return;
    }
    width_us = now_us - ch.rise_us; /* unsigned: right across a micros() wrap */
    if (width_us >= RC_PULSE_MIN_US && width_us <= RC_PULSE_MAX_US) {
        ch.width_us = (uint16_t)width_us;
        ch.pulses = (uint8_t)(ch.pulses + 1u); /* wraps at 256 */
    }
}

static void RC_ISR on_rc_steering_edge()
{
    rc_edge(rc_steering);
}

static void RC_ISR on_rc_throttle_edge()
{
    rc_edge(rc_throttle);
}

static void rc_begin(RcChannel &ch, void (*isr)())
{
    pinMode(ch.pin, INPUT);
    attachInterrupt(digitalPinToInterrupt(ch.pin), isr, CHANGE);
}

/* The channel's pulse now, or 0 without a valid one in RC_SIGNAL_TIMEOUT_MS. Once at 0 it
 * stays there until a new pulse, so a millis() wrap cannot revive a stale width. */
static uint16_t rc_read(RcChannel &ch, uint32_t now_ms)
{
    uint8_t pulses;
    uint16_t width_us;

    noInterrupts(); /* a 16-bit read is two instructions on an AVR */
    pulses = ch.pulses;
    width_us = ch.width_us;
    interrupts();
    if (pulses != ch.seen_pulses) {
        ch.seen_pulses = pulses;
        ch.seen_ms = now_ms;
        ch.value_us = width_us;
    } else if (ch.value_us != 0 && now_ms - ch.seen_ms >= RC_SIGNAL_TIMEOUT_MS) {
        ch.value_us = 0;
    }
    return ch.value_us;
}

/* ---------------------------------------------------------------------------- battery */

static uint16_t read_battery_mv()
{
#if defined(ARDUINO_ARCH_ESP32)
    const uint32_t pin_mv = analogReadMilliVolts(BATTERY_PIN); /* the core's calibration */
#else
    const uint32_t pin_mv = (uint32_t)analogRead(BATTERY_PIN) * ADC_REF_MV / ADC_STEPS;
#endif
    const uint32_t battery_mv =
        pin_mv * (BATTERY_DIVIDER_TOP + BATTERY_DIVIDER_BOTTOM) / BATTERY_DIVIDER_BOTTOM;
    return battery_mv > UINT16_MAX ? (uint16_t)UINT16_MAX : (uint16_t)battery_mv;
}

/* ---------------------------------------------------------------------------- outputs */

static void attach_at_neutral(Servo &servo, uint8_t pin, uint16_t neutral_us)
{
    /* Written before attach for the libraries that keep it (AVR, Teensy), so the first pulse
     * is neutral; again after for those that drop it (ESP32Servo). */
    servo.writeMicroseconds(neutral_us);
    servo.attach(pin, SERVO_MIN_US, SERVO_MAX_US);
    servo.writeMicroseconds(neutral_us);
}

static void apply_outputs()
{
    const mcu_pulses_t out = mcu_core_outputs(&core);
    steering_servo.writeMicroseconds(out.steering_us);
    esc.writeMicroseconds(out.throttle_us);
}

/* ---------------------------------------------------------------------------- serial
 *
 * Serial.write() waits while the transmit buffer is full: for a byte time on a UART, but on a
 * native-USB port whose host has stopped reading, for as long as its core's timeout, or for
 * ever. So every frame goes through tx_room(): the core writes a frame only whole and only
 * when it fits in the room given, and counts one that does not in core.counts.tx_dropped,
 * without spending a SEQ on it (the host sees no gap for a frame never sent). TELEMETRY and
 * replies are both droppable: the next TELEMETRY follows 20 ms later, and the host retries a
 * CONFIG or a PING that got no answer. */

/* On the ATmega32U4's USB core (Leonardo, Micro) a write that exactly fills the endpoint bank
 * then waits up to 250 ms for room to send a zero-length packet: keep one byte spare there. */
#if defined(ARDUINO_ARCH_AVR) && defined(USBCON) && !defined(TEENSYDUINO)
#define TX_SPARE_BYTES 1
#else
#define TX_SPARE_BYTES 0
#endif

/* The bytes Serial.write() takes now without waiting, at most cap. */
static size_t tx_room(size_t cap)
{
    const int room = Serial.availableForWrite() - TX_SPARE_BYTES;

    if (room <= 0) {
        return 0;
    }
    return (size_t)room < cap ? (size_t)room : cap;
}

static void receive_from_host(uint32_t now_ms)
{
    uint8_t tx[MCU_CORE_TX_BOUND(1)];
    unsigned count;

    for (count = 0; count < RX_BYTES_PER_LOOP && Serial.available() > 0; count++) {
        const uint8_t byte = (uint8_t)Serial.read();
        /* Asked before every byte: the replies to it must fit in what is free now. */
        const size_t len = mcu_core_receive(&core, &byte, 1, now_ms, tx, tx_room(sizeof tx));
        if (len > 0) {
            Serial.write(tx, len);
        }
    }
}

static void send_telemetry_when_due(uint32_t now_ms)
{
    uint8_t frame[MCU_TELEMETRY_SIZE];
    size_t len;

    if (now_ms - telemetry_ms < TELEMETRY_PERIOD_MS) {
        return;
    }
    /* Step by the period to keep 50 Hz on average through loop jitter; after a stall,
     * start again from now rather than send a burst. A dropped frame is not retried: the
     * next one is due a period later, as if it had been sent. */
    telemetry_ms += TELEMETRY_PERIOD_MS;
    if (now_ms - telemetry_ms >= TELEMETRY_PERIOD_MS) {
        telemetry_ms = now_ms;
    }
    mcu_core_set_battery(&core, read_battery_mv());
    len = mcu_core_make_telemetry(&core, frame, tx_room(sizeof frame)); /* 0: dropped */
    if (len > 0) {
        Serial.write(frame, len);
    }
}

/* ---------------------------------------------------------------------------- hardware watchdog
 *
 * The second layer behind the core's protocol watchdog, which runs only while loop() does:
 * if loop() stops (a library hanging, a write that waits after all), the Servo and PWM
 * hardware keep putting out the last pulses. The hardware watchdog then resets the board,
 * and it boots to FAILSAFE with neutral pulses. */

/* First thing in setup(). AVR: a watchdog reset leaves the watchdog running, at its shortest
 * timeout (16 ms), until WDRF in MCUSR is cleared; do so before anything slow. */
static void hw_watchdog_stop_at_boot()
{
#if defined(TEENSYDUINO)
    /* nothing: WDT_T4's WDOG1 is started only by hw_watchdog_start() */
#elif defined(ARDUINO_ARCH_AVR)
    MCUSR = 0;
    wdt_disable();
#endif
}

/* Last thing in setup(), once the outputs put out neutral. */
static void hw_watchdog_start()
{
#if defined(TEENSYDUINO)
#if defined(HW_WATCHDOG_WDT_T4)
    WDT_timings_t config;
    config.timeout = HW_WATCHDOG_S; /* seconds: 0.5 to 128 */
    config.trigger = 0;             /* no early-warning interrupt before the reset */
    config.callback = nullptr;
    hw_watchdog.begin(config);
#endif
#elif defined(ARDUINO_ARCH_AVR)
    wdt_enable(HW_WATCHDOG_AVR_TIMEOUT);
#elif defined(ARDUINO_ARCH_RP2040)
    rp2040.wdt_begin(HW_WATCHDOG_MS);
#elif defined(ARDUINO_ARCH_ESP32)
    /* Adds loopTask to the task watchdog, which arduino-esp32 builds to panic and reboot
     * (its 2.x sdkconfig: CONFIG_ESP_TASK_WDT_PANIC) after CONFIG_ESP_TASK_WDT_TIMEOUT_S,
     * 5 s by default: a last resort, far slower than the 250 ms protocol watchdog. */
    enableLoopWDT();
#endif
}

/* Every loop(). */
static void hw_watchdog_feed()
{
#if defined(TEENSYDUINO)
#if defined(HW_WATCHDOG_WDT_T4)
    hw_watchdog.feed();
#endif
#elif defined(ARDUINO_ARCH_AVR)
#if defined(USBCON)
    /* The 32U4's USB core asks for the bootloader (an upload) by closing the port at 1200
     * baud, which arms the watchdog at 120 ms: let it fire rather than feed it. Otherwise
     * the board could not be flashed without the reset button. */
    if (Serial.baud() == 1200 && !Serial.dtr()) {
        return;
    }
#endif
    wdt_reset();
#elif defined(ARDUINO_ARCH_RP2040)
    rp2040.wdt_reset();
#elif defined(ARDUINO_ARCH_ESP32)
    feedLoopWDT();
#endif
}

/* ---------------------------------------------------------------------------- main */

void setup()
{
    hw_watchdog_stop_at_boot();
    mcu_core_init(&core, FIRMWARE_NAME);
    const mcu_pulses_t neutral = mcu_core_outputs(&core); /* boot: FAILSAFE, neutral */
    attach_at_neutral(steering_servo, STEERING_OUT_PIN, neutral.steering_us);
    attach_at_neutral(esc, ESC_OUT_PIN, neutral.throttle_us);

    rc_begin(rc_steering, on_rc_steering_edge);
    rc_begin(rc_throttle, on_rc_throttle_edge);
    Serial.begin(SERIAL_BAUD);
    telemetry_ms = millis();
    hw_watchdog_start();
}

void loop()
{
    const uint32_t now_ms = millis();

    hw_watchdog_feed();
    mcu_core_set_rc(&core, rc_read(rc_steering, now_ms), rc_read(rc_throttle, now_ms));
    receive_from_host(now_ms);
    mcu_core_tick(&core, now_ms);
    apply_outputs();
    send_telemetry_when_due(now_ms);
}

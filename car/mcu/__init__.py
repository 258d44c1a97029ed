"""The serial microcontroller: wire protocol, the MCU's rules, the emulator and the host link."""

"""PWM boards on I2C: the PCA9685 driver at register level (``pca9685``), the drive loop's
Actuator over it (``actuator``), and a register-level emulator for tests (``emulator``)."""

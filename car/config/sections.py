"""The sections of `car.toml`: one frozen dataclass per concern, each field with its help
text and bounds, and ``Config``, the whole of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MAX_LOOP_HZ = 200  # the drive loop's highest rate, and drive.rate_hz's bound


def _field(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text and bounds, checked on load."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CameraConfig:
    """The camera that feeds the drive loop."""

    source: str = _field(
        "sim",
        "Frame source: 'sim' (embedded simulator), 'usb:INDEX', 'csi' (Jetson CSI camera "
        "through GStreamer), 'gst:PIPELINE' or 'replay:TUB_PATH'.",
    )
    width: int = _field(160, "Frame width in pixels.", min=16, max=4096)
    height: int = _field(120, "Frame height in pixels.", min=16, max=4096)
    fps: float = _field(60.0, "Frames per second asked of the camera.", min=1, max=1000)


@dataclass(frozen=True)
class DriveConfig:
    """The drive loop."""

    rate_hz: float = _field(20.0, "Loop rate in Hz, 1 to 200 (donkeycar's default is 20).",
                            min=1, max=MAX_LOOP_HZ)
    max_throttle: float = _field(
        0.5, "Largest throttle the autopilot may command, forward or reverse, in [0, 1].",
        min=0, max=1
    )
    start_mode: str = _field(
        "user", "Mode at start: 'user', 'local_angle' (pilot steers) or 'local' (pilot drives).",
        choices=("user", "local_angle", "local"),
    )
    ai_throttle_mult: float = _field(
        1.0, "The pilot's throttle is multiplied by this before the max_throttle limit.",
        min=0, max=2)
    steering_rate_per_s: float = _field(
        10.0, "Largest change of the commanded steering per second (2 = lock to lock in 1 s); "
        "a limit against a jerking model, not the servo's own speed.", min=0.5, max=1000)
    throttle_rate_per_s: float = _field(
        5.0, "Largest increase of the commanded throttle per second; cutting throttle toward "
        "neutral is never limited.", min=0.1, max=1000)
    hot_reload: bool = _field(
        True, "Reload the model when its file changes, loading it in the background and "
        "swapping it in between two ticks.")
    inference_threads: int = _field(
        0, "Threads ONNX Runtime may use for one inference; 0: its default (one per core). "
        "1 leaves the other cores to the camera and the rest of the loop, for a steadier "
        "rate with a large model on a small CPU.", min=0, max=64)


@dataclass(frozen=True)
class ActuatorConfig:
    """What drives the steering servo and the ESC: the serial microcontroller (MCU), whose
    settings these are, or a PCA9685 board (see [pca9685])."""

    driver: str = _field(
        "serial", "What `car drive` sends commands to off the simulator: 'serial' (the MCU), "
        "'pca9685' (an I2C PWM board, donkeycar's usual build; see [pca9685]) or 'dry' "
        "(nothing: commands are computed and timed only).", choices=("serial", "pca9685", "dry"))
    port: str = _field("/dev/ttyACM0", "Serial port of the microcontroller.")
    baud: int = _field(115200, "Serial baud rate (8N1).", min=1200, max=4_000_000)
    timeout_ms: int = _field(
        250, "MCU watchdog: outputs go neutral when no command arrives for this long. The "
        "link counts as lost after 3x this without telemetry.", min=20, max=5000)
    rc_passthrough: bool = _field(
        False, "While the MCU is in failsafe (no command from this computer), pass the RC "
        "receiver's pulses through to the servo and ESC instead of neutral.")
    connect_timeout_s: float = _field(
        3.0, "How long to wait for the MCU to answer PING at connect (an Arduino that resets "
        "when the port opens needs about 2 s).", min=0.1, max=30)


@dataclass(frozen=True)
class Pca9685Config:
    """A PCA9685 I2C PWM board (`actuator.driver = "pca9685"`), with donkeycar's defaults. It
    has no watchdog of its own: see docs/pca9685.md before driving with it."""

    bus: int = _field(1, "I2C bus number: /dev/i2c-N (1 on a Raspberry Pi; 1 or 7 on a "
                      "Jetson's 40-pin header, see `i2cdetect -l`).", min=0, max=255)
    address: int = _field(0x40, "The board's 7-bit I2C address (0x40 = 64 unless its address "
                          "pads are bridged).", min=0x03, max=0x77)
    frequency_hz: float = _field(60.0, "PWM frequency; servos and ESCs expect 50 to 60 Hz.",
                                 min=24, max=1526)
    steering_channel: int = _field(1, "Output (0-15) wired to the steering servo.", min=0,
                                   max=15)
    throttle_channel: int = _field(0, "Output (0-15) wired to the ESC.", min=0, max=15)
    oscillator_hz: int = _field(
        25_000_000, "The board's internal oscillator; the datasheet says 25 MHz, real chips "
        "run a few % off. Trim it if a scope shows pulses off by a constant ratio.",
        min=20_000_000, max=30_000_000)


@dataclass(frozen=True)
class SteeringConfig:
    """Steering servo calibration (`car calibrate steering` writes it)."""

    left_us: int = _field(1000, "Servo pulse at full left (steering -1), in µs; may be above "
                          "right_us on a servo mounted the other way.", min=500, max=2500)
    center_us: int = _field(1500, "Servo pulse that drives straight (trim), in µs.",
                            min=500, max=2500)
    right_us: int = _field(2000, "Servo pulse at full right (steering +1), in µs.",
                           min=500, max=2500)
    invert: bool = _field(False, "Swap left and right (steering -1 is then full right).")


@dataclass(frozen=True)
class ThrottleConfig:
    """ESC calibration (`car calibrate throttle` writes it)."""

    reverse_us: int = _field(1000, "ESC pulse at full reverse (throttle -1), in µs.",
                             min=500, max=2500)
    neutral_us: int = _field(1500, "ESC pulse at stop, in µs.", min=500, max=2500)
    forward_us: int = _field(2000, "ESC pulse at full forward (throttle +1), in µs.",
                             min=500, max=2500)
    invert: bool = _field(False, "Swap forward and reverse.")


@dataclass(frozen=True)
class LensConfig:
    """Camera lens intrinsics and distortion (`car calibrate camera` writes them)."""

    undistort: bool = _field(False, "Undistort every camera frame with these values.")
    model: str = _field(
        "pinhole", "Lens model: 'pinhole' (OpenCV's radial k1 k2 k3 and tangential p1 p2; up "
        "to ~120 deg) or 'fisheye' (cv2.fisheye's equidistant k1..k4; the 130-160 deg "
        "lenses).", choices=("pinhole", "fisheye"))
    width: int = _field(0, "Image width the calibration was made at (0: not calibrated).",
                        min=0, max=8192)
    height: int = _field(0, "Image height the calibration was made at.", min=0, max=8192)
    fx: float = _field(0.0, "Focal length along x, in pixels.", min=0)
    fy: float = _field(0.0, "Focal length along y, in pixels.", min=0)
    cx: float = _field(0.0, "Principal point x, in pixels.")
    cy: float = _field(0.0, "Principal point y, in pixels.")
    k1: float = _field(0.0, "Radial distortion k1.")
    k2: float = _field(0.0, "Radial distortion k2.")
    p1: float = _field(0.0, "Tangential distortion p1.")
    p2: float = _field(0.0, "Tangential distortion p2.")
    k3: float = _field(0.0, "Radial distortion k3.")
    k4: float = _field(0.0, "Fisheye distortion k4 (the fisheye model only).")
    rms_px: float = _field(0.0, "RMS reprojection error of the calibration, in pixels.", min=0)


@dataclass(frozen=True)
class RecordConfig:
    """Recording into tubs."""

    jpeg_quality: int = _field(90, "JPEG quality of recorded frames (1-100).", min=1, max=100)
    queue_size: int = _field(
        120, "Records the background writer may hold before it drops (and counts) new ones.",
        min=1, max=100_000,
    )
    checkpoint_interval_s: float = _field(
        1.0, "How often the writer makes recorded data durable (fsync), in seconds.",
        min=0.01, max=60,
    )
    catalog_max_len: int = _field(1000, "Records per catalog file (donkeycar uses 1000).",
                                  min=1, max=1_000_000)
    auto_record_throttle: float = _field(
        0.05, "While recording is on, keep only ticks whose throttle magnitude exceeds this "
        "(donkeycar's auto-record on throttle); 0 keeps every tick.", min=0, max=1)
    erase_count: int = _field(100, "Records the 'erase last' button or key soft-deletes "
                              "(restorable with `car tub restore`).", min=1, max=100_000)


@dataclass(frozen=True)
class WebConfig:
    """The web controller: a page on the car that streams video and takes the user's input."""

    host: str = _field("0.0.0.0", "Address to bind: 0.0.0.0 for every network (a phone on "
                       "the car's Wi-Fi), 127.0.0.1 for this computer only.")
    port: int = _field(8887, "TCP port of the page (donkeycar uses 8887); 0 picks a free one "
                       "(the printed URL has it).", min=0, max=65535)
    token: str = _field("", "Access token every request must carry; empty: a new random "
                        "token at each start, printed in the URL.")
    failsafe_ms: int = _field(250, "Neutral when no control message came for this long.",
                              min=50, max=2000)
    jpeg_quality: int = _field(70, "JPEG quality of the video sent to the page.", min=10,
                               max=100)


@dataclass(frozen=True)
class GamepadConfig:
    """A gamepad on the Linux joystick interface (`car gamepad test` shows its numbers)."""

    device: str = _field("/dev/input/js0", "Joystick device.")
    layout: str = _field("xbox", "Button and axis layout: xbox, ps4, ps5 (DualSense) or "
                         "custom (every number below must then be set).",
                         choices=("xbox", "ps4", "ps5", "custom"))
    steering_axis: int = _field(-1, "Axis for steering; -1: the layout's.", min=-1, max=63)
    throttle_axis: int = _field(-1, "Axis for throttle; -1: the layout's.", min=-1, max=63)
    invert_steering: bool = _field(False, "Reverse the steering axis.")
    invert_throttle: bool = _field(False, "Reverse the throttle axis (stick up is forward "
                                   "by default).")
    deadzone: float = _field(0.05, "Axis values closer to centre than this read 0.", min=0,
                             max=0.5)
    expo: float = _field(0.3, "Expo: 0 is linear; toward 1 softer around centre, same ends.",
                         min=0, max=1)
    button_mode: int = _field(-1, "Button cycling the mode user → local_angle → local; -1: "
                              "the layout's.", min=-1, max=63)
    button_record: int = _field(-1, "Button toggling recording; -1: the layout's.", min=-1,
                                max=63)
    button_erase: int = _field(-1, "Button erasing the last records; -1: the layout's.",
                               min=-1, max=63)
    button_estop: int = _field(-1, "Button for the emergency stop; -1: the layout's.", min=-1,
                               max=63)
    button_clear_estop: int = _field(-1, "Button clearing the emergency stop; -1: the "
                                     "layout's.", min=-1, max=63)


@dataclass(frozen=True)
class SimConfig:
    """The embedded simulator: the vehicle's physics, its camera mount and the expert driver."""

    physics_hz: float = _field(200.0, "Fixed physics step rate, independent of the loop rate.",
                               min=50, max=5000)
    wheelbase_m: float = _field(0.18, "Wheelbase of the simulated car (a 1/16 car).",
                                min=0.05, max=1.0)
    max_steering_deg: float = _field(25.0, "Front wheel angle at full steering.", min=5, max=45)
    top_speed_mps: float = _field(4.0, "Speed reached at full throttle.", min=0.5, max=30)
    max_accel_mps2: float = _field(4.0, "Acceleration at full throttle from a standstill.",
                                   min=0.5, max=50)
    brake_mps2: float = _field(6.0, "Deceleration at full reverse throttle while moving forward.",
                               min=0.5, max=50)
    steering_rate_dps: float = _field(
        360.0, "Steering servo slew limit, in degrees of wheel angle per second.", min=10, max=5000)
    actuation_delay_s: float = _field(
        0.04, "Delay from a command to the servo and ESC starting to act on it.", min=0, max=1)
    camera_height_m: float = _field(0.15, "Camera height above the floor.", min=0.03, max=2)
    camera_pitch_deg: float = _field(12.0, "Camera tilt below the horizontal.", min=-10, max=80)
    camera_fov_deg: float = _field(130.0, "Horizontal field of view of the wide-angle (fisheye) "
                                   "lens.", min=30, max=200)
    camera_forward_m: float = _field(0.12, "Camera position ahead of the rear axle.",
                                     min=-0.5, max=1)
    expert_speed_mps: float = _field(2.0, "Top speed of the expert driver.", min=0.2, max=20)
    expert_line_m: float = _field(
        0.0, "The expert's driving line: metres right of the centreline (0.25 on a 1.2 m "
        "track drives the right lane, like the shared real tub).", min=-2, max=2)
    expert_noise: float = _field(
        0.15, "DART noise: std of the steering noise added to the expert's executed action; "
        "the recorded label stays clean.", min=0, max=1)
    model: str = _field(
        "dynamic", "Vehicle model: 'dynamic' (single-track with tyre slip and a grip limit) or "
        "'kinematic' (no slip at any speed).", choices=("dynamic", "kinematic"))
    mu: float = _field(0.8, "Tyre-floor friction coefficient: the grip limit is mu x g.",
                       min=0.05, max=3)
    mass_kg: float = _field(1.4, "Mass of the car with its battery and computer.",
                            min=0.1, max=100)
    yaw_inertia_kgm2: float = _field(0.008, "Moment of inertia about the vertical axis.",
                                     min=1e-4, max=100)
    front_weight: float = _field(0.5, "Share of the weight on the front axle at rest.",
                                 min=0.2, max=0.8)
    cg_height_m: float = _field(0.05, "Height of the centre of mass (longitudinal load "
                                "transfer).", min=0, max=1)
    cornering_front: float = _field(
        4.7, "Front cornering stiffness per unit of load (lateral force / normal force per "
        "radian of slip).", min=0.5, max=50)
    cornering_rear: float = _field(5.5, "Rear cornering stiffness per unit of load (per "
                                   "radian).", min=0.5, max=50)
    race_margin_m: float = _field(
        0.15, "Race pace: the racing line keeps the rear axle this far inside the track's "
        "edges.", min=0, max=2)
    race_grip: float = _field(
        0.9, "Race pace: the share of mu x g the racing expert plans to use.", min=0.3, max=1)


@dataclass(frozen=True)
class PathsConfig:
    """Where data and models live. Relative paths are relative to the working directory."""

    data_dir: str = _field("data", "Folder that holds recorded tubs.")
    models_dir: str = _field("models", "Folder that holds trained models and their manifests.")
    frame_cache: str = _field(
        "", "Folder of the decoded frames training caches; empty: $XDG_CACHE_HOME/car/frames "
        "(~/.cache/car/frames).")
    frame_cache_max_gb: float = _field(
        20.0, "Size cap of the frame cache in GB: training removes the least recently used "
        "entries beyond it; 0 for no cap. `car cache info` shows it, `car cache prune` trims "
        "it.", min=0, max=1e6)


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    drive: DriveConfig = field(default_factory=DriveConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    pca9685: Pca9685Config = field(default_factory=Pca9685Config)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    lens: LensConfig = field(default_factory=LensConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    web: WebConfig = field(default_factory=WebConfig)
    gamepad: GamepadConfig = field(default_factory=GamepadConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: str = field(default="defaults", compare=False)  # where it was read from


SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}

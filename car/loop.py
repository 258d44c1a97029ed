"""The drive loop: capture → preprocess → infer → mode/safety → actuate → record, at a fixed
rate kept by a Ratekeeper on ``time.monotonic()``.

Every stage is timed into a latency histogram, and so are the frame-to-command latency and
the loop's own overhead (frame-to-command minus inference). Devices come in through their
protocols (Camera, Engine, Controller, Actuator); nothing here asks which kind they are.
The clock is injectable: the simulator's lock-step mode and the tests run the same loop on
simulated time. When a temporal pilot's state must start afresh is decided by one rule,
``car.temporal.Continuity``. What happens around the ticks (laps, put-backs, stops) is the
runner's (``car.runner``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from car.actuator import Actuator, ActuatorError
from car.camera import Camera, CameraError, EndOfFrames
from car.config import MAX_LOOP_HZ
from car.controllers import Controller
from car.frames import ESTOP, NEUTRAL, Command, Frame, Mode
from car.latency import LatencyHistogram
from car.modes import Arbiter, Decision, LimitedLog
from car.recorder import Recorder
from car.temporal import Continuity
from deploy.engine import Engine

log = logging.getLogger(__name__)
STAGES = ("capture", "preprocess", "infer", "decide", "actuate", "record")
STALE_PERIODS = 3  # a frame older than this many loop periods is not driven on
MIN_RATE_HZ, MAX_RATE_HZ = 1.0, float(MAX_LOOP_HZ)  # the rates the loop runs at
Clock = Callable[[], float]


class Ratekeeper:
    """Keeps a loop at ``hz``: ``wait()`` sleeps until the next slot. A tick that ends past
    its slot is an overrun; the schedule then restarts from now instead of bursting to
    catch up, since a late command is better than a flurry of stale ones."""

    def __init__(self, hz: float, clock: Clock = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not (math.isfinite(hz) and hz > 0):
            raise ValueError(f"loop rate must be a positive number of Hz, got {hz}")
        self.period_s = 1.0 / hz
        self._clock = clock
        self._sleep = sleep
        self.start_s = clock()
        self._next_s = self.start_s + self.period_s
        self.overruns = 0

    def wait(self) -> bool:
        """Sleep until the next slot; True if the tick just finished overran its slot."""
        now = self._clock()
        remaining = self._next_s - now
        if remaining < -1e-6:  # 1 µs of slack for float rounding on a simulated clock
            self.overruns += 1
            self._next_s = now + self.period_s
            return True
        if remaining > 0:
            self._sleep(remaining)
        self._next_s += self.period_s
        return False


@dataclass(frozen=True)
class TickResult:
    frame: Frame
    decision: Decision
    stale: bool
    latency_s: float  # frame capture to command sent


class DriveLoop:
    """One car: a camera, a pilot engine (optional in user mode), a controller, the arbiter,
    the actuator and an optional recorder."""

    def __init__(self, camera: Camera, actuator: Actuator, controller: Controller,
                 arbiter: Arbiter, engine: Engine | None = None, *,
                 recorder: Recorder | None = None, clock: Clock = time.monotonic,
                 timer: Clock = time.perf_counter):
        self.camera = camera
        self.actuator = actuator
        self.controller = controller
        self.arbiter = arbiter
        self.engine = engine
        self.recorder = recorder
        self.recording = recorder is not None
        self.auto_record_throttle = 0.0  # record ticks with |throttle| above this; 0: all
        self.recorded = 0
        self.clock = clock
        self.timer = timer
        self.period_s = arbiter.period_s
        self.stats = {name: LatencyHistogram() for name in
                      (*STAGES, "frame_to_command", "overhead", "tick")}
        self.ticks = 0
        self.swaps = 0
        self.pilot_errors = 0
        self.late_outputs = 0  # pilot outputs not sent: their frame was too old by then
        self.repeated_frames = 0
        self.record_errors = 0
        self.mode_refusals = 0  # mode requests refused (a pilot mode with no model) ...
        self.mode_refused = ""  # ... and why the last one was, in words
        self._incoming: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        self._last_seq: int | None = None
        self._last_pilot: tuple[float, float] | None = None
        self._continuity = Continuity()
        self._first_tick_s: float | None = None  # loop clock at the first and last tick
        self._last_tick_s: float | None = None
        self._log = LimitedLog(log)

    def swap_engine(self, engine: Engine) -> None:
        """Hand over a loaded engine; it takes over at the start of the next tick. Safe to
        call from another thread."""
        self._incoming.put(engine)

    def _take_incoming(self) -> None:
        while not self._incoming.empty():
            old, self.engine = self.engine, self._incoming.get()
            self.swaps += 1
            self._last_pilot = None
            self._continuity.restart()  # the new engine's state is fresh
            log.warning("model reloaded: now driving with %s", self.engine.describe())
            if old is not None:  # free GPU buffers off the loop's thread
                threading.Thread(target=old.close, name="engine-close", daemon=True).start()

    def reset_temporal(self) -> None:
        """Start the pilot's temporal state afresh now (the car was put back)."""
        if self.engine is not None:
            self.engine.reset()
        self._continuity.restart()
        self._last_pilot = None

    def tick(self) -> TickResult:
        timer = self.timer
        t0 = timer()
        self._take_incoming()
        frame = self.camera.read()
        t1 = timer()
        now = self.clock()
        if self._first_tick_s is None:
            self._first_tick_s = now
        self._last_tick_s = now
        age_s = now - frame.time_s
        limit_s = STALE_PERIODS * self.period_s
        stale = age_s > limit_s
        if stale:
            self._log.warning("stale", now, "frame %d is %.0f ms old (limit %.0f ms): outputs "
                              "neutral; is the camera delivering at the loop rate?", frame.seq,
                              age_s * 1000, STALE_PERIODS * self.period_s * 1000)
        repeated = frame.seq == self._last_seq
        self._last_seq = frame.seq
        user = self.controller.poll(now)
        mode_changed = False
        if user.mode is not None and user.mode is not Mode.USER and self.engine is None:
            self.mode_refusals += 1
            self.mode_refused = (f"mode {user.mode.value} needs a model and this run has "
                                 f"none: staying in {self.arbiter.mode.value}")
            self._log.warning("no_engine", now, "%s (start with --model)", self.mode_refused)
        elif user.mode is not None:
            mode_changed = self.arbiter.set_mode(user.mode)
        if (not repeated or stale or mode_changed) and self._continuity.breaks(
                frame, stale=stale, mode_changed=mode_changed) and self.engine is not None:
            self.engine.reset()  # the pilot's temporal state no longer follows on
        if user.recording is not None and self.recorder is not None:
            self.recording = user.recording
        if user.throttle_limit is not None:
            self.arbiter.set_throttle_limit(user.throttle_limit)
        if user.erase_last > 0 and self.recorder is not None:
            self.erase_last(user.erase_last)
        if repeated and not stale:  # the same image again: the pilot's answer stands, and
            self.repeated_frames += 1  # temporal state must not take it as a new frame
            pilot, ran = self._last_pilot, False
            t2 = t3 = timer()
        else:
            pilot, ran, t2, t3 = self._run_pilot(frame, stale, now)
            sent_age_s = self.clock() - frame.time_s  # its age as the command goes out
            if pilot is not None and sent_age_s > limit_s:
                stale, pilot = True, None
                self.late_outputs += 1
                self._log.warning("late", now, "the pilot answered on frame %d when it was "
                                  "%.0f ms old (limit %.0f ms): outputs neutral; the model "
                                  "is too slow for %.0f Hz", frame.seq, sent_age_s * 1000,
                                  limit_s * 1000, 1.0 / self.period_s)
            self._last_pilot = pilot
        fault = self.actuator.fault
        if fault is not None:
            self._log.warning("actuator", now, "%s: outputs neutral while it lasts", fault)
        decision = self.arbiter.decide(user, pilot, stale=stale, now_s=now,
                                       actuator_fault=fault is not None)
        t4 = timer()
        self.actuator.send(decision.command)
        t5 = timer()
        threshold = self.auto_record_throttle
        if self.recording and self.recorder is not None and \
                (threshold <= 0 or abs(decision.command.throttle) > threshold):
            self._record(frame, decision)
        t6 = timer()
        latency_s = max(0.0, age_s) + (t5 - t1)
        stages = [("capture", t1 - t0), ("decide", t4 - t3), ("actuate", t5 - t4),
                  ("frame_to_command", latency_s), ("overhead", (t5 - t0) - (t3 - t2)),
                  ("tick", t6 - t0)]
        if ran:  # a tick without inference says nothing about the model's speed
            stages += [("preprocess", t2 - t1), ("infer", t3 - t2)]
        if self.recording:
            stages.append(("record", t6 - t5))
        for name, seconds in stages:
            self.stats[name].add(seconds)
        self.ticks += 1
        return TickResult(frame, decision, stale, latency_s)

    def erase_last(self, count: int) -> None:
        """Soft-delete the last ``count`` records of this run (restorable), without waiting
        for the disk."""
        if self.recorder is not None:
            self.recorder.erase_last(count)

    @property
    def erased(self) -> int:
        """Records soft-deleted so far by erase requests."""
        return self.recorder.erased if self.recorder is not None else 0

    def _record(self, frame: Frame, decision: Decision) -> None:
        assert self.recorder is not None
        try:
            self.recorder.write(frame, decision, self.arbiter.mode)
            self.recorded += 1
        except Exception as exc:  # a full disk must not stop the car; what was written stays
            self.record_errors += 1
            self.recording = False
            log.error("recording stopped: %s (the records written so far are kept); "
                      "driving on", exc)

    def _run_pilot(self, frame: Frame, stale: bool, now_s: float
                   ) -> tuple[tuple[float, float] | None, bool, float, float]:
        """(the pilot's raw output or None, whether it ran, time after preprocess, time
        after inference)."""
        engine = self.engine
        if engine is None or stale or not self.arbiter.needs_pilot:
            t = self.timer()
            return None, False, t, t
        try:
            x = engine.preprocess(frame.image)
            t2 = self.timer()
            pilot = engine.infer(x)
        except Exception as exc:  # a failing model must not stop the loop: neutral instead
            self.pilot_errors += 1
            self._log.log(logging.ERROR, "pilot", now_s, "pilot failed on frame %d (%d so "
                          "far): %s: %s", frame.seq, self.pilot_errors, type(exc).__name__, exc)
            engine.reset()
            t = self.timer()
            return None, False, t, t
        t3 = self.timer()
        if not all(math.isfinite(v) for v in pilot):
            engine.reset()  # a NaN in the hidden state would stay there
        return pilot, True, t2, t3

    def run(self, ratekeeper: Ratekeeper, should_stop: Callable[[], bool] = lambda: False,
            max_ticks: int | None = None, on_tick: Callable[[TickResult], bool] | None = None,
            watchdog_s: float | None = None) -> str:
        """Tick until ``should_stop()``, ``max_ticks``, ``on_tick`` returning True, the end
        of a replay, or a failed device; returns why it stopped. Outputs end neutral.

        With ``watchdog_s``, a watchdog thread sends neutral whenever no tick has finished
        for that long (a stage that hangs), until the loop ticks again.
        """
        reason = "stopped"
        watchdog = TickWatchdog(self.actuator, watchdog_s, safe=self.safe_command) \
            if watchdog_s else None
        try:
            if watchdog is not None:
                watchdog.start()
            while not should_stop():
                try:
                    result = self.tick()
                except EndOfFrames:
                    reason = "end of frames"
                    break
                except (CameraError, ActuatorError) as exc:
                    log.error("%s: outputs neutral, stopping", exc)
                    reason = f"device failed: {exc}"
                    break
                if watchdog is not None:
                    watchdog.beat()
                if on_tick is not None and on_tick(result):
                    reason = "done"
                    break
                if max_ticks is not None and self.ticks >= max_ticks:
                    reason = "done"
                    break
                ratekeeper.wait()
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            if watchdog is not None:
                watchdog.stop()
            try:
                self.actuator.send(self.safe_command())
            except ActuatorError as exc:
                log.error("could not send the final neutral command: %s", exc)
        return reason

    def safe_command(self) -> Command:
        """Neutral, keeping an e-stop an e-stop (the MCU's latch must not be released by a
        stop that was not the user's clear)."""
        return ESTOP if self.arbiter.estopped else NEUTRAL

    @property
    def rate_hz(self) -> float | None:
        """The rate the loop ran at: ticks between the first and the last tick's start over
        the time between them (N ticks span N - 1 periods), on the loop's clock."""
        first, last = self._first_tick_s, self._last_tick_s
        if first is None or last is None or last <= first:
            return None
        return (self.ticks - 1) / (last - first)

    def summary(self, ratekeeper: Ratekeeper) -> dict[str, Any]:
        """Loop rate, overruns, per-stage latency and safety counts, as plain data."""
        c = self.arbiter.counts
        hz = self.rate_hz
        return {
            "ticks": self.ticks,
            "hz": round(hz, 2) if hz is not None else None,
            "target_hz": round(1.0 / self.period_s, 2),
            "overruns": ratekeeper.overruns,
            "overrun_pct": round(100.0 * ratekeeper.overruns / max(1, self.ticks), 3),
            "latency_ms": {name: h.summary() for name, h in self.stats.items()},
            "safety": {"estop_ticks": c.estop_ticks, "actuator_faults": c.actuator_faults,
                       "stale_frames": c.stale_frames,
                       "repeated_frames": self.repeated_frames,
                       "bad_outputs": c.bad_outputs, "pilot_errors": self.pilot_errors,
                       "late_outputs": self.late_outputs,
                       "record_errors": self.record_errors,
                       "throttle_capped": c.throttle_capped, "mode_changes": c.mode_changes},
            "model_swaps": self.swaps,
            "mode": self.arbiter.mode.value,
            "engine": self.engine.describe() if self.engine is not None else None,
        }


class TickWatchdog:
    """Sends neutral from its own thread when the loop has finished no tick for
    ``timeout_s``: a hung camera, model or disk must not leave the car on its last command.
    The actuator's ``send`` must therefore be safe to call from another thread."""

    def __init__(self, actuator: Actuator, timeout_s: float, clock: Clock = time.monotonic,
                 safe: Callable[[], Command] = lambda: NEUTRAL):
        self.actuator = actuator
        self.safe = safe
        self.timeout_s = timeout_s
        self.clock = clock
        self.trips = 0
        self._last_s = clock()
        self._tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-watchdog", daemon=True)

    def start(self) -> None:
        self._last_s = self.clock()
        self._thread.start()

    def beat(self) -> None:
        self._last_s = self.clock()
        if self._tripped:
            self._tripped = False
            log.warning("the loop is ticking again")

    def _run(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            silent_s = self.clock() - self._last_s
            if silent_s > self.timeout_s and not self._tripped:
                self._tripped = True
                self.trips += 1
                log.error("no tick for %.0f ms (a stage is hung): outputs neutral",
                          silent_s * 1000)
                try:
                    self.actuator.send(self.safe())
                except Exception as exc:  # the loop's own error handling reports it too
                    log.error("the watchdog could not send neutral: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

"""The web failsafe's deadline holds to within one loop tick: the command polled from the
page's input is in force until the next tick, so the last live command ends no later than
``failsafe_ms`` after the last control message and at most one tick earlier."""

from __future__ import annotations

import pytest

from car.config import Config, WebConfig
from car.controllers.web.state import ControlState
from car.devices import open_controller, report_to_stderr
from car.errors import CarError
from car.frames import Mode
from car.run import RunSpec, plan
from tests.test_web_controller import FakeClock

FAILSAFE_MS = 250
PAGE_MS = 40


@pytest.mark.parametrize("hz", [20.0, 50.0, 10.0])
@pytest.mark.parametrize("phase_ms", range(0, 50, 7))
def test_the_car_is_neutral_by_the_deadline_and_not_a_tick_early(hz: float,
                                                                  phase_ms: int) -> None:
    clock = FakeClock(0.0)
    period = 1.0 / hz
    state = ControlState(FAILSAFE_MS, clock, horizon_s=period)
    state.take_over()
    last_control = 1.0 + phase_ms / 1000.0
    controls = [last_control - k * PAGE_MS / 1000.0 for k in range(25)][::-1]
    polls = [k * period for k in range(int(3.0 / period))]
    live_until = None  # when the last live command stops being in force
    first_neutral = None
    events = sorted([(t, "control") for t in controls] + [(t, "poll") for t in polls],
                    key=lambda e: (e[0], e[1] == "poll"))
    for t, kind in events:
        clock.t = t
        if kind == "control":
            first = t == controls[0]  # centred: the new owner's consent
            state.control(0.0 if first else 0.3, 0.0 if first else 0.5)
            continue
        live = state.poll().throttle != 0.0
        if live and t > last_control - 0.5:
            live_until = t + period
        if not live and t > last_control and first_neutral is None:
            first_neutral = t
    assert live_until is not None and first_neutral is not None
    deadline = last_control + FAILSAFE_MS / 1000.0
    assert live_until <= deadline + 1e-9  # never in force past failsafe_ms
    assert first_neutral > deadline - 2 * period  # the neutral comes at most a tick early


def test_the_run_hands_the_loop_period_to_the_page() -> None:
    config = Config(web=WebConfig(host="127.0.0.1", port=0))
    web = open_controller("web", config, Mode.USER, None, report_to_stderr, 1 / 20)
    try:
        assert web.controller._state.horizon_s == pytest.approx(0.05)  # type: ignore[attr-defined]
    finally:
        web.controller.close()


def test_a_failsafe_shorter_than_a_tick_and_the_pages_pace_is_refused() -> None:
    config = Config(web=WebConfig(failsafe_ms=250))
    with pytest.raises(CarError, match=r"^web\.failsafe_ms = 250 is too short for a 5 Hz loop: "
                       r"a command lasts 200 ms and the page sends every 40 ms; set "
                       r"web\.failsafe_ms to 280 or more, or raise --hz$"):
        plan(RunSpec(sim="oval", controller="web", rate_hz=5), config)
    plan(RunSpec(sim="oval", controller="web", rate_hz=10), config)


def test_a_short_token_is_refused_before_anything_opens() -> None:
    config = Config(web=WebConfig(token="short"))
    with pytest.raises(CarError, match=r"^web\.token is 5 characters"):
        plan(RunSpec(sim="oval", controller="web"), config)

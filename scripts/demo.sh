#!/usr/bin/env bash
# Set up .venv (created or reused) and run the demo. Everything it writes goes to demo_out/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
OUT=demo_out
rm -rf "$OUT/real_tub" "$OUT/crash_tub" "$OUT/sim_tub" "$OUT/sim_train" "$OUT/pilot" \
    "$OUT/drive_tub" "$OUT/race_train" "$OUT/race_pilot" "$OUT/race_dagger" "$OUT/cat_pilot"
mkdir -p "$OUT/real_tub"
# The demo's own car.toml: it only keeps the models database (`car models`) in demo_out.
printf '[paths]\nmodels_dir = "%s/models"\n' "$OUT" > "$OUT/car.toml"
rm -rf "$OUT/models"
export CAR_CONFIG="$OUT/car.toml"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "== 1. A real donkeycar tub (October 2020, tub v2), unpacked into $OUT/real_tub"
tar -xzf tests/fixtures/donkeycar_real_tub_2020.tar.gz -C "$OUT/real_tub" --strip-components=1
step car tub info "$OUT/real_tub"
step car tub check "$OUT/real_tub"
step car tub hist "$OUT/real_tub" --out "$OUT/hist.png"
step car tub movie "$OUT/real_tub" --out "$OUT/movie.mp4"

echo
echo "== 2. Soft delete and restore (only the manifest's deleted list changes)"
step car tub delete "$OUT/real_tub" 0:100
step car tub restore "$OUT/real_tub" 0:100

echo
echo "== 3. Crash safety: record, kill -9 mid-write five times, reopen, check"
step python scripts/crash_demo.py "$OUT/crash_tub"
step car tub check "$OUT/crash_tub"

echo
echo "== 4. The embedded simulator: the expert drives a lap of the DIYRobocars-style track"
step car sim tracks
step car sim record --track diyrobocars --laps 1 --out "$OUT/sim_tub" --seed 1
step car tub info "$OUT/sim_tub"
step car sim view --track diyrobocars --out "$OUT/view.png"
step car tub movie "$OUT/sim_tub" --out "$OUT/sim_movie.mp4"

echo
echo "== 5. Train: expert driving with DART noise and randomised looks on two tracks,"
echo "   then a linear model on the CPU"
for track in oval technical; do
    step car sim record --track "$track" --laps 2 --out "$OUT/sim_train" --randomize --seed 3
done
step car train --tub "$OUT/sim_train" --type linear --out "$OUT/pilot" --epochs 12 --quiet
step car tub plot "$OUT/sim_tub" --model "$OUT/pilot/pilot.onnx" --out "$OUT/pred.png"

echo
echo "== 6. Drive: the closed-loop score on diyrobocars, a track the model never saw,"
echo "   against the expert; then ten seconds of real-time driving, engine latency, replay"
step car sim eval --model "$OUT/pilot/pilot.onnx" --track diyrobocars --laps 2 --vs-expert \
    --plot "$OUT/map.png"
step car drive --model "$OUT/pilot/pilot.onnx" --sim diyrobocars --duration 10 \
    --record "$OUT/drive_tub"
step car bench --model "$OUT/pilot/pilot.onnx"
step car replay "$OUT/sim_tub" --model "$OUT/pilot/pilot.onnx" --update-ref
step car replay "$OUT/sim_tub" --model "$OUT/pilot/pilot.onnx"

echo
echo "== 7. Motors over serial: the MCU emulator on a pseudo-terminal, in the loop (the"
echo "   simulated car follows the pulses the MCU reports applying); then the host goes and"
echo "   the MCU fails safe"
rm -f "$OUT/mcu_emulator.log"
PORT=$(car mcu emulate --detach --rc sweep --log "$OUT/mcu_emulator.log" 2>"$OUT/mcu_emulate.txt")
EMU_PID=$(sed -n 's/.*pid \([0-9]*\).*/\1/p' "$OUT/mcu_emulate.txt")
trap 'kill "$EMU_PID" 2>/dev/null || true' EXIT
step car mcu status --port "$PORT" --seconds 0.4
step car drive --model "$OUT/pilot/pilot.onnx" --sim diyrobocars --duration 10 \
    --actuator serial --port "$PORT"
sleep 0.5
kill "$EMU_PID"
sleep 0.5
echo "the emulator's log:"
cat "$OUT/mcu_emulator.log"

echo
echo "== 8. The donkey simulator protocol: car sim serve stands in for the Unity simulator;"
echo "   the same model drives it over TCP, scored in lock-step, then ten seconds in real time"
car sim serve --port 0 --track diyrobocars 2>"$OUT/serve.log" &
SERVE_PID=$!
trap 'kill "$EMU_PID" "$SERVE_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "serving" "$OUT/serve.log" 2>/dev/null && break; sleep 0.2; done
SIM=$(sed -n 's/.* at \(donkey:[^ ]*\) in .*/\1/p' "$OUT/serve.log")
step car sim eval --model "$OUT/pilot/pilot.onnx" --sim "$SIM" --scene diyrobocars --lockstep \
    --laps 1
step car drive --model "$OUT/pilot/pilot.onnx" --sim "$SIM" --scene diyrobocars --duration 10
kill -INT "$SERVE_PID"
wait "$SERVE_PID" || true
echo "the server's log:"
cat "$OUT/serve.log"

echo
echo "== 9. Config"
step car config show --set drive.rate_hz=30

echo
echo "== 10. The same runs from Python: the README's example builds a run (car.run.RunSpec),"
echo "   drives the simulator for three seconds and reads the summary; then the models"
echo "   database: what car train and car sim eval recorded"
EXAMPLE=$(sed -n '/<!-- python-example -->/,/^```$/p' README.md | sed '1,2d;$d')
step python -c "$EXAMPLE"
step car models

echo
echo "== 11. Hardening (docs/security.md): bad settings are refused in one line before"
echo "   anything opens; then the page under web attacks (1,100 half-open connections,"
echo "   token guessing, floods, cross-site sockets) against a no-attack baseline, and the"
echo "   web failsafe's deadline against the old rule"
step car record --sim oval --out "$OUT/refused_tub" --set web.token=short || true
step car record --sim oval --out "$OUT/refused_tub" --hz 5 || true
step car tub delete "$OUT/real_tub" " " || true
step python benchmarks/bench_attack.py --seconds 4

echo
echo "== 12. Race pace (docs/simulator.md): the car has a grip limit; the racing expert drives"
echo "   a minimum-curvature line at it, with grip, motor, trim and latency varied every lap;"
echo "   a linear model learns it and is scored against it on a track it never saw (the map"
echo "   is coloured by speed); then one round of DAgger (docs/dagger.md)"
for track in oval technical; do
    step car sim record --track "$track" --laps 2 --out "$OUT/race_train" --pace race \
        --randomize --seed 7
done
step car train --tub "$OUT/race_train" --type linear --out "$OUT/race_pilot" --epochs 12 --quiet
step car sim eval --model "$OUT/race_pilot/pilot.onnx" --track diyrobocars --laps 2 \
    --pace race --vs-expert --latency-ms 1 --plot "$OUT/race_map.png"
step car sim dagger --model "$OUT/race_pilot" --track oval technical --rounds 1 --laps 1 \
    --epochs 3 --eval-track diyrobocars --eval-laps 1 --latency-ms 1 --pace race \
    --out "$OUT/race_dagger" --quiet

echo
echo "== 13. The categorical pilot (docs/training.md): the same cruise data, steering in 15"
echo "   bins and throttle in 20, cross-entropy; the manifest declares the bins, the tub plot"
echo "   draws the probabilities under each trace, and the closed-loop score on the unseen track"
step car train --tub "$OUT/sim_train" --type categorical --out "$OUT/cat_pilot" --epochs 12 \
    --quiet
step python -c "from deploy.manifest import load_manifest as load
m = load('$OUT/cat_pilot/pilot.onnx')
for name, bins, probs in zip(m.output_names, m.bins, m.probabilities):
    print(f'{name}: {bins} bins, probabilities in the {probs} output')"
step car tub plot "$OUT/sim_tub" --model "$OUT/cat_pilot/pilot.onnx" --out "$OUT/pred_categorical.png"
step car sim eval --model "$OUT/cat_pilot/pilot.onnx" --track diyrobocars --laps 2 --vs-expert

echo "Demo done. Look at $OUT/map.png, $OUT/view.png, $OUT/pilot/loss.png, $OUT/pred.png,"
echo "$OUT/pred_categorical.png, $OUT/race_map.png, $OUT/sim_movie.mp4, $OUT/hist.png and $OUT/movie.mp4."

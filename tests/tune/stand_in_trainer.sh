#!/bin/sh
# A scripted stand-in for a ctrain trainer, as ctrain-sweep sees one, so the sweep's scheduling
# tests (tests/apps/sweep_cli_test.cpp) are fast and their metric streams fixed. It speaks the
# trainers' side of the contract (tune/sweep.cpp, tune/trial.cpp; SweepTest.Trainer* checks the
# real one):
#   - the command line: the sweep's fixed arguments, --NAME VALUE per sampled parameter,
#     --output-dir DIR, --epochs N (ASHA's budget), --resume; any other flag is a usage error
#     (exit 2 naming it, as CLI11 does);
#   - one line per epoch appended to DIR/metrics.jsonl, after that epoch's checkpoint
#     DIR/checkpoints/epoch-NNNN.pt (a text file here);
#   - SIGTERM stops it at once: "stopped by SIGTERM in epoch E ...; rerun with --resume",
#     exit 143 (128 + SIGTERM), the last checkpoint kept;
#   - --resume continues after the newest checkpoint, saying "resumed from FILE (epoch E done)".
# Its validation_acc after epoch e is 1 - exp(-10 * learning_rate * (e + 1)): a better rate is a
# better stream, the same on every run. An epoch takes $CTRAIN_STAND_IN_EPOCH_S seconds (0.2),
# so a policy's SIGTERM lands mid-run.
# CTRAIN_STAND_IN_HOLD=DIR: the run (not a --resume) whose --output-dir is DIR holds after its
# first epoch until a signal ends it, so a test can kill the sweep while that trial trains.
set -u
epochs=20 lr=0.01 dir= resume=0
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs|--num-epochs) epochs=$2; shift ;;
    --learning-rate) lr=$2; shift ;;
    --output-dir) dir=$2; shift ;;
    --resume) resume=1 ;;
    --no-onnx) ;;
    --batch-size|--threads|--seed|--data-folder|--momentum) shift ;;
    *) echo "stand_in_trainer: the following argument was not expected: $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$dir" ] || { echo "stand_in_trainer: --output-dir is required" >&2; exit 2; }
mkdir -p "$dir/checkpoints" || exit 1

epoch=0 waiter=
trap 'echo "stopped by SIGTERM in epoch $epoch; rerun with --resume to continue" >&2
      [ -n "$waiter" ] && kill "$waiter" 2>/dev/null; exit 143' TERM
if [ "$resume" = 1 ]; then
  last=$(ls "$dir/checkpoints" | sort | tail -n 1)
  if [ -n "$last" ]; then
    done_epoch=$(cat "$dir/checkpoints/$last")
    echo "resumed from $dir/checkpoints/$last (epoch $done_epoch done)"
    epoch=$((done_epoch + 1))
  fi
fi
# Sleeps in the background and waits for it: the trap runs at once, not after the sleep.
pause() { sleep "$1" & waiter=$!; wait "$waiter"; waiter=; }

while [ "$epoch" -lt "$epochs" ]; do
  pause "${CTRAIN_STAND_IN_EPOCH_S:-0.2}"
  # Every value is computed (in its own command) before anything is written: a SIGTERM to the
  # process group kills a running awk, and the shell runs its trap only once the command in
  # progress ends. Inside a printf's arguments that would append a line with an empty field.
  values=$(awk -v lr="$lr" -v e="$epoch" 'BEGIN { a = 1 - exp(-10 * lr * (e + 1)); printf "%.6f %.6f %04d", a, 1 - a, e }')
  acc=${values%% *} rest=${values#* }
  loss=${rest%% *} name=${rest#* }
  printf '%d\n' "$epoch" > "$dir/checkpoints/epoch-$name.pt"
  printf '{"epoch":%d,"train_loss":%s,"validation_acc":%s,"lr":%s}\n' "$epoch" "$loss" "$acc" "$lr" >> "$dir/metrics.jsonl"
  echo "$epoch -- Training accuracy: $acc Validation accuracy: $acc"
  if [ "$resume" = 0 ] && [ "$epoch" = 0 ] && [ "${CTRAIN_STAND_IN_HOLD:-}" = "$dir" ]; then
    while :; do pause 1; done
  fi
  epoch=$((epoch + 1))
done
echo "final_acc: ${acc:-none}"

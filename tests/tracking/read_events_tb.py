#!/usr/bin/env python3
"""TensorBoard's own reader (its EventAccumulator, what `tensorboard --logdir` loads) on ctrain's
event files: prints one JSON line {"tag", "step", "value"} per scalar it accepted.
Usage: read_events_tb.py PATH   (a run directory, or one events file)
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea


def main():
    acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            print(json.dumps({"tag": tag, "step": e.step, "value": e.value}))


if __name__ == "__main__":
    main()

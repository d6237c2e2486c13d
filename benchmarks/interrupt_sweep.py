"""Ctrl-C at every moment of ``python -m ser_utils predict`` over a folder, on a busy machine: the promise
(one ``error: interrupted ...`` line, exit status 130, no output file written, the previous one kept) is
checked at each signal point, ``--repeats`` times in a row.

An eGeMAPS + logistic-regression baseline folder (the model kind whose openSMILE callback once swallowed
a Ctrl-C) and ``--clips`` one-second clips are written to a temporary folder. Each run starts
``predict <folder> --model <baseline> --csv <old file>`` in its own session, waits ``delay`` seconds and
sends SIGINT to the whole process group (what Ctrl-C in a terminal does). The delays cover start-up
(imports: torch's alone takes seconds on a busy machine), loading the model, reading the clips,
openSMILE's extraction, the result lines and the writes. ``--busy N`` processes spin on the CPU the whole
time (default 1: "a busy second process").

Each run is one of:

* ``interrupted``: the promise held;
* ``finished``: the signal came after the run had written its outputs (complete CSV, exit status 0, or
  130 from a signal during the interpreter's exit): not a failure, counted so the sweep shows where it
  stopped reaching the run;
* ``FAIL``: anything else (a traceback, exit 0 more than a second after the signal: unheard, a
  half-written or missing old file, more than one line). The script exits 1 if any run failed.

The first point is 0.1 s: before it, on a busy machine, the signal may land in CPython's own start-up
(``site``, the editable install's finder), before the first line of any program runs, where CPython
prints its traceback (exit 1) or, when the command started with SIGINT ignored, the kernel discards it.

Every other repeat starts ``predict`` with SIGINT ignored, as a shell without job control (a script,
``nohup cmd &``) starts a background command; Python keeps such a signal ignored unless told otherwise,
which is how a ``kill -INT`` during start-up once went unheard (exit 0).

    python benchmarks/interrupt_sweep.py [--repeats 20] [--delays 0.1,0.2,...] [--clips 60] [--busy 1]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD = "the previous run's table\n"
DELAYS = "0.1,0.2,0.5,1,1.5,2,3,4,5,6,7,8,9,10,12,14"
#: A run that exits 0 this long after the signal did not hear it (writing the outputs takes milliseconds).
UNHEARD = 1.0


def make_work(root: Path, n_clips: int) -> tuple[Path, Path]:
    import numpy as np
    import soundfile as sf

    from ser_utils.data.corpus import EMOTIONS
    from ser_utils.data.synthetic import synthesize_clip
    from ser_utils.features import make_extractor
    from ser_utils.models.baseline import BaselineModel
    from ser_utils.models.classifiers import make_classifier

    extractor, rng = make_extractor("egemaps"), np.random.default_rng(0)
    X, y = rng.normal(size=(80, extractor.n_features)), np.array(EMOTIONS * 10)
    model = root / "model"
    BaselineModel(extractor, make_classifier("logreg", None, probability=True).fit(X, y),
                  classifier="logreg").save_pretrained(model)
    clips = root / "clips"
    clips.mkdir()
    for i in range(n_clips):
        sf.write(str(clips / f"clip{i:03d}.wav"), synthesize_clip(EMOTIONS[i % 8], 3, seconds=1.0, rng=rng), 16000)
    return model, clips


def one_run(model: Path, clips: Path, out: Path, delay: float, n_clips: int, ignored: bool) -> tuple[str, str]:
    """Start predict (with SIGINT ignored if ``ignored``), signal its group after ``delay`` seconds; the
    outcome and what it printed."""
    out.write_text(OLD)
    disposition = signal.SIG_IGN if ignored else signal.SIG_DFL
    run = subprocess.Popen([sys.executable, "-m", "ser_utils", "predict", str(clips), "--model", str(model),
                            "--csv", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    time.sleep(delay)
    running = run.poll() is None
    if running:
        os.killpg(run.pid, signal.SIGINT)
    sent = time.monotonic()
    stdout, stderr = run.communicate(timeout=600)
    after = time.monotonic() - sent
    lines = stderr.strip().splitlines()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    text = out.read_text()
    detail = f"status {run.returncode}, {len(stdout.splitlines())} stdout lines, stderr {stderr[-300:]!r}"
    if leftovers:
        return "FAIL", f"temporary files left: {leftovers}; {detail}"
    if run.returncode == 130 and len(lines) == 1 and lines[0].startswith("error: interrupted") and text == OLD:
        return "interrupted", detail
    complete = text != OLD and text.count("\n") == 1 + 2 * n_clips and len(stdout.splitlines()) == n_clips
    if running and run.returncode == 0 and after > UNHEARD:
        return "FAIL", f"the signal went unheard: the run went on for {after:.1f} s and exited 0; {detail}"
    if complete and run.returncode in (0, 130, -signal.SIGINT) and len(lines) <= 1:
        return "finished", detail
    return "FAIL", detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--delays", default=DELAYS, help="seconds after the start, comma-separated")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--busy", type=int, default=1, help="processes spinning on the CPU meanwhile")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    tally: dict[float, collections.Counter] = {d: collections.Counter() for d in delays}
    failures = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            model, clips = make_work(root, args.clips)
            (root / "out").mkdir()
            for repeat in range(args.repeats):
                ignored = repeat % 2 == 1  # every other repeat: started as a script's background job
                for delay in delays:
                    outcome, detail = one_run(model, clips, root / "out" / "scores.csv", delay, args.clips, ignored)
                    tally[delay][outcome] += 1
                    if outcome == "FAIL":
                        failures.append(f"repeat {repeat + 1}, {delay} s, SIGINT ignored at start: {ignored}: {detail}")
                        print(f"FAIL at {delay} s (repeat {repeat + 1}): {detail}", flush=True)
                print(f"repeat {repeat + 1}/{args.repeats} done, {len(failures)} failure(s) so far", flush=True)
    finally:
        for process in busy:
            process.kill()
    print(f"\n{'delay s':>8} {'interrupted':>12} {'finished':>9} {'FAIL':>5}")
    for delay, counts in tally.items():
        print(f"{delay:>8g} {counts['interrupted']:>12} {counts['finished']:>9} {counts['FAIL']:>5}")
    print(f"{sum(sum(c.values()) for c in tally.values())} runs, {len(failures)} failed "
          f"({args.busy} busy process(es), {args.clips} clips)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

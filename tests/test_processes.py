"""The command line as a separate process, where only real signals, pipes and kernel errors will do: Ctrl-C
and SIGTERM during scoring, a reader that closes stdout, a write cut short by the kernel, and a file the
user may not read. Plus openSMILE's ctypes callback, which swallowed a Ctrl-C."""

import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_utils.core import interrupts
from ser_utils.data.corpus import EMOTIONS
from ser_utils.data.synthetic import synthesize_clip
from ser_utils.features import EgemapsFeatures, make_extractor
from ser_utils.models.baseline import BaselineModel
from ser_utils.models.classifiers import make_classifier

N_CLIPS = 150


#: Every test here starts real processes (seconds each).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An eGeMAPS baseline folder, a first clip, a broken file and a folder of 150 one-second clips."""
    root = tmp_path_factory.mktemp("processes")
    extractor = make_extractor("egemaps")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, extractor.n_features)), np.array(EMOTIONS * 10)
    BaselineModel(extractor, make_classifier("logreg", None, probability=True).fit(X, y),
                  classifier="logreg").save_pretrained(root / "model")
    (root / "many").mkdir()
    for i in range(N_CLIPS):
        sf.write(str(root / "many" / f"clip{i:03d}.wav"), synthesize_clip(EMOTIONS[i % 8], 3, seconds=1.0, rng=rng),
                 16000)
    sf.write(str(root / "first.wav"), synthesize_clip("sad", 4, seconds=1.0, rng=rng), 16000)
    (root / "broken.wav").write_text("not audio")
    return root


def start(*args, **options):
    return subprocess.Popen([sys.executable, "-m", "ser_utils", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)


def _temporary_files(folder):
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_scoring_stops_between_files_and_writes_nothing(work, tmp_path, signum, status):
    old = tmp_path / "scores.csv"
    old.write_text("the previous run's table\n")
    # The broken file makes the first clip's line come out at once; the 150 clips after it are scored together.
    run = start("predict", work / "first.wav", work / "broken.wav", work / "many", "--model", work / "model",
                "--csv", old)
    first = run.stdout.readline()
    assert first.startswith(str(work / "first.wav")), run.stderr.read()
    run.send_signal(signum)
    out, err = run.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert run.returncode == status and not out  # nothing printed after the signal
    assert lines[0] == f"error: {work / 'broken.wav'}: not a readable audio file (Format not recognised.)"
    name = signal.Signals(signum).name
    assert len(lines) == 2 and re.fullmatch(rf"error: interrupted \({name}\) after \d+ of {N_CLIPS + 2} file\(s\); "
                                            "no output file written", lines[1]), lines
    assert old.read_text() == "the previous run's table\n" and not _temporary_files(tmp_path)


def _as_a_background_job_of_a_script():
    """In the child: what a shell without job control does to a command started with ``&``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _wait_until_loaded(pid: int, library: str, timeout: float = 60.0) -> None:
    """Until process ``pid`` has mapped a shared library whose path holds ``library``: a point inside the
    program's own imports, whatever the machine's load (before it, CPython's start-up, where no program's
    code runs yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if library in Path(f"/proc/{pid}/maps").read_text():
                return
        except OSError:
            return  # it already exited: the assertions say how
        time.sleep(0.002)


@pytest.mark.parametrize("delay, ignored", [(0.0, False), (0.4, False), (1.5, False), (0.4, True), (1.5, True)])
def test_a_ctrl_c_during_start_up_on_a_busy_machine_is_one_line_and_status_130(work, tmp_path, delay, ignored):
    old = tmp_path / "scores.csv"
    old.write_text("the previous run's table\n")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:  # imports (torch's takes seconds here) and the model's loading: a traceback and status -2 before;
        # started with SIGINT ignored, the signal was dropped and the run went on to exit 0
        run = start("predict", work / "many", "--model", work / "model", "--csv", old, start_new_session=True,
                    preexec_fn=_as_a_background_job_of_a_script if ignored else None)
        _wait_until_loaded(run.pid, "_multiarray_umath")  # numpy: the first extension the command imports
        time.sleep(delay)
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        out, err = run.communicate(timeout=120)
    finally:
        busy.kill()
    assert run.returncode == 130 and not out, err  # was -11 (SIGSEGV) or -2 at times: torch's teardown
    assert re.fullmatch(r"error: interrupted( \(SIGINT\) after \d+ of \d+ file\(s\); no output file written)?\n",
                        err), err
    assert old.read_text() == "the previous run's table\n" and not _temporary_files(tmp_path)


def test_a_sigterm_during_the_imports_is_one_line_and_status_143(work, tmp_path):
    """Once the command has started importing (numpy mapped), a SIGTERM waits for the imports and ends the
    run with 143 (it said 130: every interrupt during start-up was reported as a Ctrl-C)."""
    old = tmp_path / "scores.csv"
    old.write_text("the previous run's table\n")
    run = start("predict", work / "many", "--model", work / "model", "--csv", old, start_new_session=True)
    _wait_until_loaded(run.pid, "_multiarray_umath")
    os.kill(run.pid, signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143 and not out, err
    assert re.fullmatch(r"error: interrupted( \(SIGTERM\) after \d+ of \d+ file\(s\); no output file written)?\n",
                        err), err
    assert old.read_text() == "the previous run's table\n" and not _temporary_files(tmp_path)


def test_a_signal_arriving_while_the_handlers_are_being_set_is_not_lost(monkeypatch):
    real = signal.signal

    def setting(signum, handler):  # the signal lands right after deferred set its SIGINT handler
        previous = real(signum, handler)
        if signum == signal.SIGINT and handler is interrupts._record:
            os.kill(os.getpid(), signal.SIGINT)
        return previous

    monkeypatch.setattr(signal, "signal", setting)
    with pytest.raises(interrupts.Interrupted, match="SIGINT"):  # was wiped: the run went on, exit 0
        with interrupts.deferred():
            pass


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C in this process, even where the test run started with SIGINT ignored (as a
    script's ``cmd &`` starts it: then os.kill(SIGINT) did nothing at all)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_inside_opensmile_is_not_swallowed(monkeypatch, python_ctrl_c):
    import opensmile

    wave = synthesize_clip("angry", 2, seconds=1.0, rng=np.random.default_rng(0))
    collect = opensmile.Smile._sink_callback

    def interrupting(y, starts, ends):  # Ctrl-C arrives while openSMILE is calling back into Python
        inner = collect(y, starts, ends)

        def callback(data, meta):
            os.kill(os.getpid(), signal.SIGINT)
            inner(data, meta)

        return callback

    monkeypatch.setattr(opensmile.Smile, "_sink_callback", staticmethod(interrupting))
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    with pytest.warns(UserWarning, match="Segment too short"), \
            pytest.MonkeyPatch.context() as quiet:  # what ctypes does with the KeyboardInterrupt: prints, drops
        quiet.setattr(sys, "unraisablehook", lambda unraisable: None)
        swallowed = smile.process_signal(wave, 16000).to_numpy()
    assert np.isnan(swallowed).all()  # the run would go on, and call a good clip "non-finite features"
    with pytest.raises(KeyboardInterrupt):
        EgemapsFeatures().extract(wave)


def test_a_closed_stdout_stops_the_lines_only(work, tmp_path):
    csv, out_json = tmp_path / "scores.csv", tmp_path / "scores.json"
    clips = sorted((work / "many").iterdir())[:3]
    run = start("predict", *clips, "--model", work / "model", "--csv", csv, "--json", out_json)
    run.stdout.close()  # the reader is gone before the first line, as with `| head -0`
    err = run.stderr.read()
    assert run.wait(timeout=120) == 0 and err == ""  # no BrokenPipeError traceback
    assert pd.read_csv(csv)["row"].tolist() == ["window", "aggregate"] * 3
    assert len(pd.read_json(out_json)) == 3


def test_a_write_the_kernel_cuts_short_keeps_the_old_files(work, tmp_path):
    csv, out_json = tmp_path / "scores.csv", tmp_path / "scores.json"
    csv.write_text("old csv\n")
    out_json.write_text("[]\n")

    def small_files():  # any write past 512 bytes fails (EFBIG): a full quota, in effect
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    clips = sorted((work / "many").iterdir())[:3]
    run = start("predict", *clips, "--model", work / "model", "--csv", csv, "--json", out_json,
                preexec_fn=small_files)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1 and out.count("\n") == 3
    assert err.strip().splitlines() == [f"error: {path}: not written (File too large); any earlier file there is left "
                                        "as it was" for path in (csv, out_json)]
    assert csv.read_text() == "old csv\n" and out_json.read_text() == "[]\n" and not _temporary_files(tmp_path)


def _without_file_permission_override():
    """In the child: even root loses the right to read files regardless of their mode."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, out of the bounding set
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_file_says_permission_denied(work, tmp_path):
    locked = tmp_path / "locked.wav"
    locked.write_bytes((work / "first.wav").read_bytes())
    locked.chmod(0)
    try:
        run = start("predict", locked, work / "first.wav", "--model", work / "model",
                    preexec_fn=_without_file_permission_override)
    except subprocess.SubprocessError as err:
        pytest.skip(f"cannot drop the permission override here ({err})")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1 and out.startswith(str(work / "first.wav"))
    assert err.strip() == f"error: {locked}: permission denied (this file cannot be read by you)"

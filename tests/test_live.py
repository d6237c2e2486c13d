"""``predict -``: audio on standard input (a WAV stream or raw PCM), each window's line as soon as its audio
has arrived, the stream's line at its end; bad streams one line and status 2. Through the command line, in
a subprocess fed by a pipe, with a tiny wav2vec2 model exported to ONNX."""

import contextlib
import io
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from ser_utils.__main__ import main
from ser_utils.core.config import REPO_ROOT


@pytest.fixture(scope="module")
def onnx_dir(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "w2v2-onnx"
    assert main(["export", str(model_dir), "--onnx", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """7.5 s of speech-like audio at 16 kHz, as a 16-bit WAV file."""
    from ser_utils.data.synthetic import synthesize_clip

    wave = np.concatenate([synthesize_clip(e, 3, seconds=2.5, rng=np.random.default_rng(i))
                           for i, e in enumerate(("angry", "sad", "happy"))])
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    sf.write(path, 0.5 * wave / np.abs(wave).max(), 16_000, subtype="PCM_16")
    return path


def _predict(stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    """``predict ARGS`` through ``main`` with ``stdin`` on file descriptor 0 (what ``predict -`` reads), in
    this process: a subprocess each would cost a second of start-up."""
    import os
    import tempfile

    with tempfile.TemporaryFile() as source:
        source.write(stdin)
        source.seek(0)
        saved = os.dup(0)
        os.dup2(source.fileno(), 0)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main(["predict", *args])
        finally:
            os.dup2(saved, 0)
            os.close(saved)
    return subprocess.CompletedProcess(args, status, out.getvalue().encode(), err.getvalue().encode())


def _wav_bytes(path, subtype: str, rate: int = 16_000, channels: int = 1) -> bytes:
    wave, own = sf.read(path, dtype="float32")
    if rate != own:
        import soxr

        wave = soxr.resample(wave, own, rate)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([wave] * channels, 1) if channels > 1 else wave, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def test_a_wav_stream_and_raw_pcm_score_as_the_file_does(onnx_dir, speech):
    args = ["--windows", "--model", str(onnx_dir)]
    from_file = _predict(b"", str(speech), *args)
    assert from_file.returncode == 0, from_file.stderr
    expected = [line.split("\t", 1)[1] for line in from_file.stdout.decode().splitlines()]
    assert len(expected) == 3  # windows 0-6 and 1.5-7.5, then the file's line
    wav = speech.read_bytes()
    for stdin, extra in ((wav, []), (wav[44:], ["--raw"]), (wav[44:], ["--raw", "--rate", "16000", "--channels", "1",
                                                                           "--sample-format", "s16"])):
        done = _predict(stdin, "-", *extra, *args)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        assert [line.split("\t", 1)[0] for line in lines] == ["<stdin>"] * 3
        assert [line.split("\t", 1)[1] for line in lines] == expected
    # other rates, channels and sample types are read, mixed down and resampled as a file's are
    for subtype, rate, channels in (("FLOAT", 16_000, 2), ("PCM_32", 48_000, 1), ("PCM_U8", 22_050, 1)):
        done = _predict(_wav_bytes(speech, subtype, rate, channels), "-", *args)
        assert done.returncode == 0 and len(done.stdout.decode().splitlines()) == 3, done.stderr


@pytest.mark.parametrize(("cut", "extra", "message"), [
    (30, [], "error: <stdin>: the stream ends inside the WAV header ('fmt ' chunk): a cut or empty stream"),
    (0, [], "error: <stdin>: the stream ends inside the WAV header (RIFF header): a cut or empty stream"),
    (44 + 16_001, [], "error: <stdin>: 1 byte(s) at the end are not a whole sample frame (1 channel(s) x 2 bytes); "
     "the stream was cut or is not what --channels / --sample-format say"),
    (1000, ["--raw", "--rate", "1000000"], "error: --rate: <stdin>: a rate of 1000000 Hz; streams of 4000 to 384000 "
     "Hz are resampled to the model's rate"),
    (1000, ["--raw", "--channels", "0"], "error: --channels: <stdin>: 0 channels; a stream has 1 to 64"),
    (-1, ["--raw"], "error: <stdin>: not a WAV stream (it starts with b'RIFF')"),
])
def test_a_bad_stream_is_one_line_and_status_2(onnx_dir, speech, cut, extra, message):
    wav = speech.read_bytes()
    stdin = wav[:cut] if cut >= 0 else wav
    if cut < 0:  # a WAV stream given as raw is read as samples; the other way round is refused
        stdin, extra = wav[44:], []
        message = "error: <stdin>: not a WAV stream (it starts with "
    done = _predict(stdin, "-", *extra, "--model", str(onnx_dir))
    err = done.stderr.decode().splitlines()
    assert done.returncode == 2 and len(err) == 1 and err[0].startswith(message), done.stderr
    assert "<stdin>\t" not in done.stdout.decode()  # no stream line for a stream that was not read whole


def _read_line(process, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().decode() if ready else ""


def test_each_window_is_printed_as_soon_as_its_audio_arrived_and_ctrl_c_stops_the_stream(onnx_dir, speech):
    samples = speech.read_bytes()[44:]
    second = 32_000  # bytes of one second, 16-bit mono at 16 kHz
    command = [sys.executable, "-m", "ser_utils", "predict", "-", "--raw", "--windows", "--window", "1", "--hop", "1",
               "--model", str(onnx_dir)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=REPO_ROOT)
    try:
        process.stdin.write(samples[:second + 100])  # one window and a little more; the pipe stays open
        process.stdin.flush()
        line = _read_line(process, 60)
        assert line.startswith("<stdin>\t0.000-1.000\t"), process.stderr.read1().decode() if not line else line
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        process.stdin.write(samples[second + 100:3 * second])  # the next read stops the stream
        process.stdin.flush()
        process.stdin.close()
        assert process.wait(60) == 130
        assert process.stderr.read().decode().splitlines()[-1] == ("error: interrupted (SIGINT); the stream was not "
                                                                   "scored to its end, no output file written")
    finally:
        process.kill()
        process.wait()

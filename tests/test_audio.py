import os

import numpy as np
import pytest
import soundfile as sf

from ser_utils.data.audio import (
    AudioError,
    SilentAudioError,
    audio_seconds,
    collate,
    crop,
    is_silent,
    level_warning,
    load_audio,
    normalize,
    stream_audio,
)
from tests.conftest import STEREO_SAMPLES


def test_48k_samples_load_as_16k_mono(sample_48k):
    files = sorted(sample_48k.rglob("*.wav"))
    assert len(files) == 8
    stereo = 0
    for path in files:
        info = sf.info(str(path))
        assert info.samplerate == 48000
        stereo += info.channels == 2
        wave = load_audio(path)
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert abs(len(wave) - info.frames / 3) <= 1
        assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    assert stereo == len(STEREO_SAMPLES) == 5


def test_stereo_files_are_down_mixed(sample_48k, tmp_path):
    # RAVDESS's stereo files carry the same signal twice; down-mixing must give exactly that signal.
    path = next(sample_48k.rglob(f"{STEREO_SAMPLES[0]}.wav"))
    data, rate = sf.read(str(path), dtype="float32")
    assert data.shape[1] == 2
    left = _write(tmp_path / "left.wav", data[:, 0], rate, subtype="FLOAT")
    assert np.allclose(load_audio(path), load_audio(left), atol=1e-6)


def test_different_channels_are_averaged(tmp_path):
    t = np.arange(24000) / 48000
    left, right = 0.4 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 700 * t)
    stereo = _write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 48000, subtype="FLOAT")
    mono = _write(tmp_path / "mono.wav", (left + right) / 2, 48000, subtype="FLOAT")
    only_left = _write(tmp_path / "left.wav", left, 48000, subtype="FLOAT")
    assert np.allclose(load_audio(stereo), load_audio(mono), atol=1e-6)
    assert not np.allclose(load_audio(stereo), load_audio(only_left), atol=1e-2)


def test_48k_sample_matches_the_16k_reference_copy(ravdess_48k_sample, ravdess_16k):
    # ../shared/data/ravdess-16k was made from the same originals (soxr VHQ, channels averaged).
    for path in sorted(ravdess_48k_sample.rglob("*.wav")):
        ours = load_audio(path)
        reference = load_audio(next(ravdess_16k.rglob(f"{path.stem}.flac")))
        assert len(ours) == len(reference)
        assert np.corrcoef(ours, reference)[0, 1] > 0.999
        assert np.max(np.abs(ours - reference)) < 2e-3


@pytest.mark.parametrize("rate, channels", [(44100, 1), (48000, 2), (8000, 1), (16000, 1)])
def test_resampled_sine_keeps_its_frequency(tmp_path, rate, channels):
    freq = 440.0
    t = np.arange(int(2.0 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(str(path), np.stack([tone] * channels, axis=1), rate)
    wave = load_audio(path)
    assert len(wave) == 32000
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    peak_hz = np.argmax(spectrum) * 16000 / len(wave)
    assert abs(peak_hz - freq) <= 1.0
    assert abs(np.abs(wave[1000:-1000]).max() - 0.5) < 0.01


def _write(path, data, rate=16000, subtype="PCM_16"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def _text(path):
    path.write_text("hello, not audio")
    return path


@pytest.mark.parametrize("make, error, fragment", [
    (lambda d: d / "missing.wav", AudioError, "no such file"),
    (lambda d: _text(d / "text.wav"), AudioError, "not a readable"),
    (lambda d: _write(d / "empty.wav", np.zeros(0)), AudioError, "empty"),
    (lambda d: _write(d / "silent.wav", np.zeros(16000)), SilentAudioError, "silent"),
    (lambda d: _write(d / "nan.wav", np.full(1600, np.nan, np.float32), subtype="FLOAT"),
     AudioError, "NaN"),
    (lambda d: _write(d / "long.wav", np.ones(16000 * 3) * 0.1), AudioError, "max_seconds"),
])
def test_bad_input_raises_a_clear_error_naming_the_file(tmp_path, make, error, fragment):
    path = make(tmp_path)
    with pytest.raises(error, match=fragment) as err:
        load_audio(path, max_seconds=2.0)
    assert path.name in str(err.value)


def test_silent_clips_load_when_allowed(tmp_path):
    path = _write(tmp_path / "silent.wav", np.zeros(8000))
    assert np.all(load_audio(path, allow_silent=True) == 0)


def test_collate_pads_at_the_end_and_keeps_lengths():
    batch, lengths = collate([np.ones(3), 2 * np.ones(5)])
    assert batch.shape == (2, 5) and batch.dtype.is_floating_point
    assert lengths.tolist() == [3, 5]
    assert batch[0].tolist() == [1, 1, 1, 0, 0]


def test_crop_is_centred_without_rng_and_seeded_with_it():
    wave = np.arange(10.0)
    assert crop(wave, 4).tolist() == [3, 4, 5, 6]
    assert crop(wave, 20) is wave
    a = crop(wave, 4, np.random.default_rng(1))
    b = crop(wave, 4, np.random.default_rng(1))
    assert len(a) == 4 and np.array_equal(a, b)


def test_normalize_gives_zero_mean_unit_variance():
    wave = normalize(np.random.default_rng(0).normal(3.0, 0.2, 16000))
    assert abs(wave.mean()) < 1e-5 and abs(wave.std() - 1) < 1e-3


@pytest.mark.parametrize("rate, channels, subtype", [(48000, 2, "PCM_16"), (44100, 1, "FLOAT"), (16000, 3, "PCM_24"),
                                                     (22050, 2, "PCM_16")])
def test_reading_in_blocks_equals_reading_the_whole_file(tmp_path, rate, channels, subtype):
    rng = np.random.default_rng(rate)
    seconds = 12.3  # longer than the default 10 s block: two blocks, the second partial
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t)))
    data = np.stack([voice * (1 - 0.2 * c) + 0.01 * rng.normal(size=len(t)) for c in range(channels)], axis=1)
    path = _write(tmp_path / f"long.{'flac' if subtype != 'FLOAT' else 'wav'}", data, rate, subtype=subtype)
    whole = load_audio(path, block_seconds=None)
    for block in (10.0, 1.0, 0.3):
        streamed = load_audio(path, block_seconds=block)
        assert streamed.dtype == np.float32 and streamed.shape == whole.shape
        assert np.max(np.abs(streamed - whole)) <= 1e-6  # the tolerance; measured: identical


def test_a_constant_signal_is_silent_however_far_from_zero(tmp_path):
    dc = _write(tmp_path / "dc.wav", np.full(16000, 0.5, np.float32), subtype="FLOAT")
    with pytest.raises(SilentAudioError, match="DC offset"):
        load_audio(dc)
    assert is_silent(np.full(100, -0.7, np.float32)) and not is_silent(np.array([0.5, 0.5, 0.5001], np.float32))
    offset_speech = 0.5 + 0.1 * np.sin(np.arange(16000) / 5)  # speech riding on an offset is not silent
    assert load_audio(_write(tmp_path / "offset.wav", offset_speech, subtype="FLOAT")).std() > 0.05


def test_a_peak_far_above_full_scale_gets_a_warning_naming_the_clip():
    speech = 0.5 * np.sin(np.arange(16000) / 5).astype(np.float32)
    assert level_warning(speech, "a.wav") is None and level_warning(1.5 * speech / 0.5, "a.wav") is None
    message = level_warning(1000 * speech, "a.wav")
    assert message.startswith("a.wav: peak amplitude 500, 54 dB above full scale")


def test_a_folder_or_a_pipe_is_named_for_what_it_is(tmp_path):
    with pytest.raises(AudioError, match="is a folder, not an audio file"):
        load_audio(tmp_path)
    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(AudioError, match="not a regular file"):  # opening it would wait for a writer forever
        load_audio(tmp_path / "pipe.wav")


@pytest.mark.parametrize("rate, channels, subtype", [(48000, 2, "PCM_16"), (44100, 1, "FLOAT"), (16000, 1, "PCM_16")])
def test_streaming_yields_the_loaded_samples_block_by_block(tmp_path, rate, channels, subtype):
    rng = np.random.default_rng(rate)
    t = np.arange(int(23.7 * rate)) / rate  # three 10 s blocks, the last partial
    voice = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t)))
    data = np.stack([voice * (1 - 0.2 * c) + 0.01 * rng.normal(size=len(t)) for c in range(channels)], axis=1)
    path = _write(tmp_path / f"long.{'flac' if subtype != 'FLOAT' else 'wav'}", data, rate, subtype=subtype)
    for block in (10.0, 3.0):
        chunks = list(stream_audio(path, block_seconds=block))
        assert len(chunks) >= np.ceil(23.7 / block) and all(c.dtype == np.float32 for c in chunks)
        assert np.array_equal(np.concatenate(chunks), load_audio(path, max_seconds=None, block_seconds=block))
    assert audio_seconds(path) == pytest.approx(23.7, abs=1e-4) and audio_seconds(tmp_path / "missing.wav") is None


@pytest.mark.parametrize("make, error, fragment", [
    (lambda d: d / "missing.wav", AudioError, "no such file"),
    (lambda d: _text(d / "text.wav"), AudioError, "not a readable"),
    (lambda d: _write(d / "empty.wav", np.zeros(0)), AudioError, "empty"),
    (lambda d: _write(d / "silent.wav", np.zeros(16000)), SilentAudioError, "silent"),
    (lambda d: _write(d / "nan.wav", np.full(1600, np.nan, np.float32), subtype="FLOAT"), AudioError, "NaN"),
])
def test_streaming_raises_what_loading_raises(tmp_path, make, error, fragment):
    path = make(tmp_path)
    with pytest.raises(error, match=fragment) as loaded:
        load_audio(path)
    with pytest.raises(error, match=fragment) as streamed:
        list(stream_audio(path))
    assert str(streamed.value) == str(loaded.value)


def test_a_stream_reports_nan_at_its_block_after_the_good_blocks(tmp_path):
    data = np.full(16000 * 25, 0.1, np.float32)
    data[16000 * 21] = np.nan  # in the third 10 s block
    stream = stream_audio(_write(tmp_path / "late-nan.wav", data, subtype="FLOAT"))
    assert len(next(stream)) == len(next(stream)) == 160000
    with pytest.raises(AudioError, match="NaN"):
        next(stream)

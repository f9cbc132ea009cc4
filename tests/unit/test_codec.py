"""G.711 coders (bit-exact with audioop) and the streaming resampler."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voicecalld.media import codec

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13+ without audioop-lts
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is not available")

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_BYTES = bytes(range(256))


@needs_audioop
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(codec.ulaw_encode, "lin2ulaw"), (codec.alaw_encode, "lin2alaw")],
)
def test_encoders_match_audioop_on_every_sample(ours, theirs):
    assert ours(ALL_SAMPLES) == getattr(audioop, theirs)(ALL_SAMPLES, 2)


@needs_audioop
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(codec.ulaw_decode, "ulaw2lin"), (codec.alaw_decode, "alaw2lin")],
)
def test_decoders_match_audioop_on_every_byte(ours, theirs):
    assert ours(ALL_BYTES) == getattr(audioop, theirs)(ALL_BYTES, 2)


def _s16(*values: int) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def test_known_mu_law_values():
    assert codec.ulaw_decode(b"\x00\x80\x7f\xff") == _s16(-32124, 32124, 0, 0)
    assert codec.ulaw_encode(_s16(0, -1, 32767, -32768)) == b"\xff\x7e\x80\x00"
    assert codec.ulaw_decode(codec.ULAW_SILENCE) == _s16(0)
    assert codec.alaw_decode(codec.ALAW_SILENCE) == _s16(8)
    assert codec.FRAME_BYTES == 160


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(codec.ulaw_encode, codec.ulaw_decode), (codec.alaw_encode, codec.alaw_decode)],
)
def test_round_trip_stays_within_the_quantization_step(encode, decode):
    samples = np.frombuffer(ALL_SAMPLES, dtype="<i2").astype(np.int32)
    back = np.frombuffer(decode(encode(ALL_SAMPLES)), dtype="<i2").astype(np.int32)
    error = np.abs(back - samples)
    assert len(back) == 65536
    assert np.all(error <= np.maximum(np.abs(samples) // 16, 16) + 4)


def test_encoding_half_a_sample_is_refused():
    with pytest.raises(ValueError):
        codec.ulaw_encode(b"\x00\x00\x00")


def _tone(freq: float, seconds: float = 1.0, rate: int = 24000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12000).astype("<i2").tobytes()


def _resample(pcm: bytes, chunk: int | None = None) -> np.ndarray:
    resampler = codec.Resampler(24000, 8000)
    if chunk is None:
        out = resampler.feed(pcm)
    else:
        out = b"".join(resampler.feed(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk))
    out += resampler.flush()
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_resampled_length_is_a_third():
    out = _resample(_tone(1000))
    assert abs(len(out) - 8000) <= 4


def test_tone_frequency_survives():
    out = _resample(_tone(1000))
    spectrum = np.abs(np.fft.rfft(out[400:-400] * np.hanning(len(out) - 800)))
    peak = np.argmax(spectrum) * 8000 / (len(out) - 800)
    assert abs(peak - 1000) < 10
    assert _rms(out[400:-400]) > 0.6 * 12000 / np.sqrt(2)


def test_content_above_4khz_is_filtered_not_aliased():
    # Dropping two samples in three would fold 6 kHz down to 2 kHz at full strength.
    out = _resample(_tone(6000))
    assert _rms(out) < 0.01 * 12000 / np.sqrt(2)


def test_chunked_feeding_matches_one_shot():
    pcm = _tone(700, 0.5)
    whole = _resample(pcm)
    for chunk in (1, 333, 4801):
        chunked = _resample(pcm, chunk)
        assert abs(len(chunked) - len(whole)) <= 2
        n = min(len(whole), len(chunked))
        assert np.max(np.abs(chunked[:n] - whole[:n])) <= 2


def test_first_audio_comes_out_early():
    resampler = codec.Resampler(24000, 8000)
    out = b"".join(resampler.feed(_tone(440, 0.01)) for _ in range(6))
    assert len(out) > 0


def test_an_empty_feed_gives_nothing():
    assert codec.Resampler(24000, 8000).feed(b"") == b""


def test_encoding_samples_gives_what_encoding_their_bytes_gives():
    samples = np.frombuffer(ALL_SAMPLES, dtype="<i2")
    assert codec.ulaw_encode_samples(samples) == codec.ulaw_encode(ALL_SAMPLES)
    assert codec.ulaw_encode_samples(samples[:0]) == b""


def test_tts_transcoding_without_bytes_in_between_gives_the_same_mu_law():
    """soxr dithers its int16 output (two runs differ), so each chunk is checked against its own."""
    from voicecalld.voice.tts_openai import PcmToUlaw

    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal(24000) * 4000).astype("<i2").tobytes()
    cuts = sorted(rng.integers(0, len(pcm), 40).tolist())
    chunks = [pcm[a:b] for a, b in zip([0, *cuts], [*cuts, len(pcm)], strict=True)]
    transcoder = PcmToUlaw()
    resampler = transcoder._resampler
    outputs: list[bytes] = []

    def recorded(method):
        def call(*args):
            samples = method(*args)
            outputs.append(samples.tobytes())
            return samples

        return call

    resampler.feed_samples = recorded(resampler.feed_samples)
    resampler.flush_samples = recorded(resampler.flush_samples)
    got = [transcoder.feed(c) for c in chunks] + [transcoder.flush()]
    assert got == [codec.ulaw_encode(out) for out in outputs]
    assert sum(map(len, got)) == pytest.approx(len(pcm) // 6, abs=2)

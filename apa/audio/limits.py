"""What apa.audio accepts and produces: sample rates, sizes, durations, levels (see apa.audio's doc)."""

SAMPLE_RATE = 16000  # Hz, what the model consumes
MIN_SPEECH_S = 0.3  # least speech accepted: SpeechSpan.voiced_s, the frames the VAD calls speech
MAX_DURATION_S = 30.0  # longest accepted recording, measured before trimming (see module doc)
MAX_FILE_BYTES = 20_000_000  # 20 MB (decimal, as shown to the learner), checked before decoding
MIN_INPUT_RATE = 4000  # Hz; telephone audio is 8 kHz
MAX_INPUT_RATE = 192000  # Hz; studio audio tops out here
MAX_CHANNELS = 2  # mono or stereo; more is not a learner's microphone (checked if check=True)
MAX_MIX_CHANNELS = 64  # to_mono_16k mixes down at most this many (more: a damaged header)
MAX_NONFINITE_FRACTION = 0.01  # NaN/inf samples above this fraction -> "corrupt"
SILENCE_PEAK_DBFS = -60.0  # peak below this -> silent / microphone muted

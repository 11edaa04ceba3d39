"""ecgedge on-device runtime: stream ECG in, get rhythm events out. Never imports torch.

Public API::

    StreamPipeline            samples → WindowEvent / EpisodeEvent (callbacks, async iterator)
    load_bundle, Bundle       verified model bundles; bundle_path(name) finds a shipped one
    WindowClassifier, WindowInputs   windows → class probabilities (ONNX Runtime)
    Calibrator, UserProfile   on-device per-user calibration of t and the head
    load_profile, save_profile  user profiles bound to a bundle (atomic, 0600, checksummed)
    spectrogram, lorenz_image, record_windows   the model inputs, as the trainer computes them
    RingBuffer, Preprocessor  streaming building blocks
    StepEmbedder              an LRU bundle's step model: one hop in, the window's embedding out
    detect_rpeaks, StreamingRPeakDetector, heart_rate_bpm, assess_quality
"""

from sdk.bundle import (
    Bundle,
    Manifest,
    bundle_path,
    default_bundle_path,
    load_bundle,
    shipped_bundles,
)
from sdk.calibration import Calibrator, UserProfile, load_profile, save_profile
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.errors import (
    BlockError,
    BufferOverflowError,
    BundleError,
    ConfigError,
    EcgEdgeError,
    MissingDependencyError,
    ProfileError,
    SampleRateError,
)
from sdk.events import EpisodeEvent, Event, WindowEvent
from sdk.lru_step import StepEmbedder
from sdk.modalities import lorenz_image, spectrogram
from sdk.pipeline import StreamPipeline, StreamStats
from sdk.preprocess import Preprocessor, PreprocessSpec, preprocess_record, standardize_window
from sdk.quality import QualityReport, assess_quality
from sdk.ringbuffer import RingBuffer
from sdk.rpeaks import StreamingRPeakDetector, detect_rpeaks, heart_rate_bpm
from sdk.windowing import record_windows

__all__ = [
    "BlockError",
    "Bundle",
    "BufferOverflowError",
    "BundleError",
    "Calibrator",
    "ConfigError",
    "EcgEdgeError",
    "EpisodeEvent",
    "Event",
    "Manifest",
    "MissingDependencyError",
    "PreprocessSpec",
    "ProfileError",
    "Preprocessor",
    "QualityReport",
    "RingBuffer",
    "SampleRateError",
    "StepEmbedder",
    "StreamPipeline",
    "StreamStats",
    "StreamingRPeakDetector",
    "UserProfile",
    "WindowClassifier",
    "WindowEvent",
    "WindowInputs",
    "assess_quality",
    "bundle_path",
    "default_bundle_path",
    "shipped_bundles",
    "detect_rpeaks",
    "heart_rate_bpm",
    "load_bundle",
    "load_profile",
    "lorenz_image",
    "preprocess_record",
    "record_windows",
    "save_profile",
    "spectrogram",
    "standardize_window",
]

"""ecgedge on-device runtime: stream ECG in, get rhythm events out. Never imports torch.

Public API::

    StreamPipeline            samples → WindowEvent / EpisodeEvent (callbacks, async iterator)
    load_bundle, Bundle       verified model bundles; default_bundle_path() is the shipped one
    WindowClassifier          window → class probabilities (ONNX Runtime)
    RingBuffer, Preprocessor  streaming building blocks
    detect_rpeaks, StreamingRPeakDetector, heart_rate_bpm, assess_quality
"""

from sdk.bundle import Bundle, Manifest, default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier
from sdk.errors import (
    BlockError,
    BufferOverflowError,
    BundleError,
    ConfigError,
    EcgEdgeError,
    MissingDependencyError,
    SampleRateError,
)
from sdk.events import EpisodeEvent, Event, WindowEvent
from sdk.pipeline import StreamPipeline, StreamStats
from sdk.preprocess import Preprocessor, PreprocessSpec, preprocess, standardize_window
from sdk.quality import QualityReport, assess_quality
from sdk.ringbuffer import RingBuffer
from sdk.rpeaks import StreamingRPeakDetector, detect_rpeaks, heart_rate_bpm

__all__ = [
    "BlockError",
    "Bundle",
    "BufferOverflowError",
    "BundleError",
    "ConfigError",
    "EcgEdgeError",
    "EpisodeEvent",
    "Event",
    "Manifest",
    "MissingDependencyError",
    "PreprocessSpec",
    "Preprocessor",
    "QualityReport",
    "RingBuffer",
    "SampleRateError",
    "StreamPipeline",
    "StreamStats",
    "StreamingRPeakDetector",
    "WindowClassifier",
    "WindowEvent",
    "assess_quality",
    "default_bundle_path",
    "detect_rpeaks",
    "heart_rate_bpm",
    "load_bundle",
    "preprocess",
    "standardize_window",
]

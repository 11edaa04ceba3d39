"""ecgedge firmware bridge: bytes from ECG sensors in, samples on a gap-aware stream clock out.

Pure codecs and clock alignment: stdlib and numpy only, no radio. A BLE transport (the
only module that may import ``bleak``) feeds notifications to these decoders; a simulator
uses the encoders to emit byte-exact frames.

Public API::

    polar_pmd      Polar H10 PMD protocol: UUIDs, control-point requests and responses,
                   raw and delta ECG frames (decode + encode), per-sample sensor times
    hrs            Bluetooth SIG Heart Rate Service, Body Sensor Location, Battery Level
    open_profile   the open ECG GATT profile for device makers (see OPEN_PROFILE.md)
    clock          ClockAligner: sensor ns -> host s, drift in ppm, reset detection
    errors         BridgeError > DecodeError (also ValueError), ProtocolError,
                   TransportError > ConnectError, ClockError
    transport      Transport: the small interface every backend implements
    ble            BleakTransport and scan() (bleak imported only when used)
    simulator      VirtualH10 / VirtualOpenDevice: byte-exact frames of any signal
    sim_transport  SimulatedTransport: an impaired radio link on a virtual clock
    profiles       PolarH10, OpenEcgDevice: start a stream, decode its frames
    assembler      FrameAssembler: frames -> sample-accurate, gap-flagged blocks
    session        SensorSession: connect, stream, reconnect with backoff, count
"""

from firmware_bridge.assembler import DecodedFrame, FrameAssembler, SampleSink
from firmware_bridge.ble import BleakTransport, scan
from firmware_bridge.clock import ClockAligner
from firmware_bridge.errors import (
    BridgeError,
    ClockError,
    ConnectError,
    DecodeError,
    ProtocolError,
    TransportError,
)
from firmware_bridge.hrs import (
    BATTERY_LEVEL_UUID,
    BATTERY_SERVICE_UUID,
    BODY_SENSOR_LOCATION_UUID,
    BODY_SENSOR_LOCATIONS,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    HeartRateMeasurement,
    encode_hr_measurement,
    parse_battery_level,
    parse_body_sensor_location,
    parse_hr_measurement,
)
from firmware_bridge.open_profile import (
    OPEN_ECG_CONTROL_UUID,
    OPEN_ECG_DATA_UUID,
    OPEN_ECG_SERVICE_UUID,
    OpenEcgFrame,
    decode_open_frame,
    encode_open_frame,
)
from firmware_bridge.polar_pmd import (
    PMD_CONTROL_POINT_UUID,
    PMD_DATA_UUID,
    PMD_SERVICE_UUID,
    ControlPointResponse,
    EcgFrame,
    MeasurementType,
    SettingType,
    decode_ecg_frame,
    encode_ecg_delta,
    encode_ecg_raw,
    get_settings_request,
    parse_response,
    parse_settings,
    sample_times_ns,
    start_request,
    stop_request,
)
from firmware_bridge.profiles import OpenEcgDevice, PolarH10, Profile
from firmware_bridge.session import Backoff, SensorSession, SessionStats
from firmware_bridge.sim_transport import SimulatedTransport
from firmware_bridge.simulator import Impairments, VirtualH10, VirtualOpenDevice
from firmware_bridge.transport import FoundDevice, NotifyHandler, Transport

__all__ = [
    "Backoff",
    "BleakTransport",
    "DecodedFrame",
    "FoundDevice",
    "FrameAssembler",
    "Impairments",
    "NotifyHandler",
    "OpenEcgDevice",
    "PolarH10",
    "Profile",
    "SampleSink",
    "SensorSession",
    "SessionStats",
    "SimulatedTransport",
    "Transport",
    "VirtualH10",
    "VirtualOpenDevice",
    "scan",
    "BATTERY_LEVEL_UUID",
    "BATTERY_SERVICE_UUID",
    "BODY_SENSOR_LOCATIONS",
    "BODY_SENSOR_LOCATION_UUID",
    "HEART_RATE_MEASUREMENT_UUID",
    "HEART_RATE_SERVICE_UUID",
    "OPEN_ECG_CONTROL_UUID",
    "OPEN_ECG_DATA_UUID",
    "OPEN_ECG_SERVICE_UUID",
    "PMD_CONTROL_POINT_UUID",
    "PMD_DATA_UUID",
    "PMD_SERVICE_UUID",
    "BridgeError",
    "ClockAligner",
    "ClockError",
    "ConnectError",
    "ControlPointResponse",
    "DecodeError",
    "EcgFrame",
    "HeartRateMeasurement",
    "MeasurementType",
    "OpenEcgFrame",
    "ProtocolError",
    "SettingType",
    "TransportError",
    "decode_ecg_frame",
    "decode_open_frame",
    "encode_ecg_delta",
    "encode_ecg_raw",
    "encode_hr_measurement",
    "encode_open_frame",
    "get_settings_request",
    "parse_battery_level",
    "parse_body_sensor_location",
    "parse_hr_measurement",
    "parse_response",
    "parse_settings",
    "sample_times_ns",
    "start_request",
    "stop_request",
]

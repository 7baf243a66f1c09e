"""The alarm and anomaly core: numba kernels over per-channel (or per-limit) state
arrays, each with a plain-Python twin written from the rule. Pure: no I/O, no
clock, no logging, no project imports beyond this package.

Conventions: ``x`` is one poll cycle's reading per channel (NaN: none), ``t`` its
time in seconds; state lives in arrays owned by a thin wrapper class that checks
inputs once and hands its state out for persistence (``state()`` / ``load()``).
"""

from edge_agent.core.anomaly import (
    AnomalyBank,
    AnomalyParams,
    AnomalyTwin,
    anomaly_run,
    anomaly_step,
)
from edge_agent.core.exposure import ExposureBank, ExposureTwin, exposure_run, exposure_step
from edge_agent.core.rate import RateOfRiseBank, RateOfRiseTwin, rate_run, rate_step
from edge_agent.core.rules import RuleBank, RuleTwin, rules_step
from edge_agent.core.sensor_faults import (
    SensorFaultBank,
    SensorFaultTwin,
    sensor_faults_run,
    sensor_faults_step,
)
from edge_agent.core.threshold import LimitTwin, ThresholdBank, threshold_run, threshold_step

# kernel name -> (compiled step, plain-Python twin); the conformance tests walk this.
KERNELS = {"threshold": (threshold_step, LimitTwin), "anomaly": (anomaly_step, AnomalyTwin),
           "exposure": (exposure_step, ExposureTwin), "rate": (rate_step, RateOfRiseTwin),
           "sensor_faults": (sensor_faults_step, SensorFaultTwin),
           "rules": (rules_step, RuleTwin)}

__all__ = [
    "KERNELS", "AnomalyBank", "AnomalyParams", "AnomalyTwin", "ExposureBank", "ExposureTwin",
    "LimitTwin", "RateOfRiseBank", "RateOfRiseTwin", "RuleBank", "RuleTwin", "SensorFaultBank",
    "SensorFaultTwin", "ThresholdBank", "anomaly_run", "anomaly_step", "exposure_run",
    "exposure_step", "rate_run", "rate_step", "rules_step", "sensor_faults_run",
    "sensor_faults_step", "threshold_run", "threshold_step",
]

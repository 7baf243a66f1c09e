"""Default alarm limits and exposure limits per gas: the one place they live.

Every number is traceable to ../shared/domain/SAFETY_REFERENCE.md. Occupational
exposure limits are GBZ 2.1-2019 values in mg/m3 (§3); a channel that reports ppm
gets them converted at the site's molar volume (§1: mg/m3 = ppm × M / Vm, default
Vm 24.05 L/mol at 20 °C, the Chinese sampling reference), never silently.

Two schemes set the instantaneous levels of toxic gases (§2):
- ``gbt50493`` (GB/T 50493-2019 §5.5.2): level 1 = 100 % of the OEL, level 2 = 200 %,
  the OEL being the MAC if the gas has one, else the PC-TWA (§2.1 note);
- ``gbzt223`` (GBZ/T 223-2009): level 1 (预报) = ½ MAC or ½ PC-STEL, level 2 (警报) =
  the MAC or the PC-STEL; gases with only a PC-TWA use the peak limit 3 × PC-TWA
  (GBZ 2.1 peak exposure) in place of the STEL.
Both set O2 to below 19.5 and above 23.5 %VOL and flammables to 25 and 50 %LEL
(GB/T 50493-2019 §5.5.2). Gases with a PC-TWA or PC-STEL also get STEL and TWA
exposure limits. A deadband of 5 % of the setpoint (0.2 %VOL for O2, 1 %LEL for
flammables) keeps readings at a setpoint from chattering; that is our choice.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SUBSTANCES", "Substance", "default_exposure", "default_limits", "to_unit"]


@dataclass(frozen=True)
class Substance:
    """GBZ 2.1-2019 limits of one gas, mg/m3 (None: the gas has no such limit)."""

    molar_mass: float  # g/mol
    mac: float | None = None
    twa: float | None = None
    stel: float | None = None

    @property
    def oel(self) -> float:
        """The OEL of GB/T 50493's rule: the MAC if any, else the PC-TWA."""
        return self.mac if self.mac is not None else self.twa  # type: ignore[return-value]


SUBSTANCES = {  # SAFETY_REFERENCE.md §3 table
    "h2s": Substance(34.08, mac=10),
    "co": Substance(28.01, twa=20, stel=30),
    "hcn": Substance(27.03, mac=1),
    "hcl": Substance(36.46, mac=7.5),
    "cl2": Substance(70.90, mac=1),
    "nh3": Substance(17.03, twa=20, stel=30),
    "so2": Substance(64.07, twa=5, stel=10),
    "no2": Substance(46.01, twa=5, stel=10),
    "hf": Substance(20.01, mac=2),
    "co2": Substance(44.01, twa=9000, stel=18000),  # §8.6
}


def to_unit(mg_per_m3: float, gas: str, unit: str, molar_volume_l: float) -> float | None:
    """A limit given in mg/m3, in the channel's unit; None for a unit we cannot convert."""
    if unit.lower() in ("mg/m3", "mg/m³"):
        return mg_per_m3
    if unit.lower() == "ppm":
        return round(mg_per_m3 * molar_volume_l / SUBSTANCES[gas].molar_mass, 2)
    return None


def default_limits(gas: str | None, unit: str, scheme: str, molar_volume_l: float
                   ) -> list[dict]:
    """The limits a channel measuring ``gas`` in ``unit`` gets from ``scheme``, as config
    dicts (level, above or below, deadband); [] when there is no default.
    """
    if scheme == "none" or gas is None:
        return []
    if gas == "o2" and unit.upper() == "%VOL":
        return [{"level": 1, "below": 19.5, "deadband": 0.2},
                {"level": 1, "above": 23.5, "deadband": 0.2}]
    if gas == "flammable" and unit.upper() == "%LEL":
        return [{"level": 1, "above": 25.0, "deadband": 1.0},
                {"level": 2, "above": 50.0, "deadband": 1.0}]
    substance = SUBSTANCES.get(gas)
    if substance is None:
        return []
    if scheme == "gbt50493":
        levels = (substance.oel, 2 * substance.oel)
    else:  # gbzt223
        alarm = substance.mac or substance.stel or 3 * substance.twa  # type: ignore[operator]
        levels = (alarm / 2, alarm)
    limits = []
    for level, mg in enumerate(levels, start=1):
        setpoint = to_unit(mg, gas, unit, molar_volume_l)
        if setpoint is None:
            return []
        limits.append({"level": level, "above": setpoint,
                       "deadband": round(0.05 * setpoint, 2)})
    return limits


def default_exposure(gas: str | None, unit: str, molar_volume_l: float
                     ) -> tuple[float | None, float | None]:
    """(STEL limit, TWA limit) of a gas in the channel's unit; (None, None) if none."""
    substance = SUBSTANCES.get(gas or "")
    if substance is None or (substance.stel is None and substance.twa is None):
        return None, None
    convert = [None if mg is None else to_unit(mg, gas, unit, molar_volume_l)  # type: ignore[arg-type]
               for mg in (substance.stel, substance.twa)]
    return convert[0], convert[1]

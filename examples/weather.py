"""A weather agent: two tools over a fixed table, and a streamed text answer.

The same class serves both platforms: on Conversimple the platform's LLM calls
``get_weather`` / ``get_forecast``; on Arinova customers' messages are answered
by ``on_message``, streamed in a few chunks. No network: the data is a table in
this module, so every answer is deterministic.

Run it against a platform::

    orchestrator run examples/weather.py:WeatherAgent --url wss://platform.example/ws --api-key ...

or against the bundled sandbox with ``orchestrator demo``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import attrs
import trio

from orchestrator.agent import Agent, tool

Units = Literal["metric", "imperial"]

MAX_FORECAST_DAYS = 7


@attrs.frozen
class Conditions:
    """Today's weather in one city (metric units)."""

    name: str
    temp_c: float
    condition: str
    humidity: int
    wind_kph: float


CITIES: dict[str, Conditions] = {
    c.name.casefold(): c
    for c in (
        Conditions("Amsterdam", 14.0, "light rain", 82, 22.0),
        Conditions("Berlin", 17.5, "partly cloudy", 61, 12.0),
        Conditions("Lisbon", 23.0, "sunny", 48, 15.0),
        Conditions("London", 15.5, "overcast", 74, 18.0),
        Conditions("New York", 21.0, "clear", 55, 10.0),
        Conditions("Paris", 18.0, "partly cloudy", 64, 9.0),
        Conditions("Tokyo", 26.5, "humid and hazy", 78, 7.0),
    )
}

# A fixed week of departures from today's temperature and the sky that goes with each.
_FORECAST_PATTERN: tuple[tuple[float, str], ...] = (
    (1.0, "sunny"),
    (-2.0, "showers"),
    (0.5, "partly cloudy"),
    (2.5, "sunny"),
    (-1.0, "overcast"),
    (3.0, "clear"),
    (-3.5, "thunderstorms"),
)


def find_city(city: str) -> Conditions:
    """The table entry for ``city`` ("paris", "Paris, FR"); ValueError if it is not known."""
    key = city.split(",")[0].strip().casefold()
    found = CITIES.get(key)
    if found is None:
        known = ", ".join(c.name for c in CITIES.values())
        raise ValueError(f"unknown city {city.strip()[:60]!r}; I know {known}")
    return found


def _temperature(celsius: float, units: Units) -> float:
    return round(celsius * 9 / 5 + 32, 1) if units == "imperial" else celsius


def _speed(kph: float, units: Units) -> float:
    return round(kph / 1.609344, 1) if units == "imperial" else kph


class WeatherAgent(Agent):
    """Current weather and a short forecast for a handful of cities."""

    agent_id = "weather"

    @tool
    async def get_weather(self, city: str, units: Units = "metric") -> dict[str, Any]:
        """Current weather for a city.

        Args:
            city: city name, e.g. "Paris" or "New York".
            units: "metric" (°C, km/h) or "imperial" (°F, mph).
        """
        now = find_city(city)
        await trio.lowlevel.checkpoint()
        return {
            "city": now.name,
            "temperature": _temperature(now.temp_c, units),
            "temperature_unit": "F" if units == "imperial" else "C",
            "condition": now.condition,
            "humidity_percent": now.humidity,
            "wind_speed": _speed(now.wind_kph, units),
            "wind_unit": "mph" if units == "imperial" else "km/h",
        }

    @tool
    async def get_forecast(self, city: str, days: int = 3) -> dict[str, Any]:
        """Daily forecast (high, low, sky) for the next few days, in °C.

        Args:
            city: city name, e.g. "Lisbon".
            days: how many days ahead, 1 to 7.
        """
        if not 1 <= days <= MAX_FORECAST_DAYS:
            raise ValueError(f"days must be between 1 and {MAX_FORECAST_DAYS}, got {days}")
        now = find_city(city)
        await trio.lowlevel.checkpoint()
        return {
            "city": now.name,
            "days": [
                {
                    "day": offset + 1,
                    "high_c": now.temp_c + delta + 3.0,
                    "low_c": now.temp_c + delta - 5.0,
                    "condition": condition,
                }
                for offset, (delta, condition) in enumerate(_FORECAST_PATTERN[:days])
            ],
        }

    async def on_message(self, message: str) -> AsyncIterator[str]:
        """Answer a question in text, streamed in a few chunks (Arinova)."""
        text = message.casefold()
        mentioned = [c for key, c in CITIES.items() if key in text]
        if not mentioned:
            yield "I can tell you the weather in "
            yield ", ".join(c.name for c in CITIES.values())
            yield ". Which city?"
            return
        wants_forecast = "forecast" in text or "tomorrow" in text or "week" in text
        for index, city in enumerate(mentioned):
            await trio.lowlevel.checkpoint()
            if index:
                yield " "
            if wants_forecast:
                delta, condition = _FORECAST_PATTERN[0]
                yield f"Tomorrow in {city.name}: "
                yield f"{condition}, up to {city.temp_c + delta + 3.0:g}°C."
            else:
                yield f"Right now in {city.name}: "
                yield f"{city.temp_c:g}°C and {city.condition}, "
                yield f"humidity {city.humidity}%."

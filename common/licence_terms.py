"""What a licence can switch on, and the limits without one (community mode, stated in the
README). Shared by the license server and the components; imports nothing."""

from __future__ import annotations

FEATURES = ("gender", "age", "emotions", "fast-index")
COMMUNITY_LIMITS: dict[str, int] = {"faces": 1_000_000, "cameras": 8, "extractors": 4}

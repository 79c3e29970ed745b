"""Hypothesis profiles: CI by default, `HYPOTHESIS_PROFILE=dash_flex-nightly` for the heavy run."""

from dash_flex.testing import register_profiles

register_profiles()

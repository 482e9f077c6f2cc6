"""Configuration: typed dataclass groups whose field metadata is the `--help` text, one flat key
space shared by flags and YAML, compatibility aliases, and validation with did-you-mean."""

from lmforge.config.fields import arg

__all__ = ["arg"]

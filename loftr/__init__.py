"""LoFTR training platform: the detector-free transformer matcher, trained and evaluated with
Hydra-composed Lightning runs."""

__version__ = "0.1.0"

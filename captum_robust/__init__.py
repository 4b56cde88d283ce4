"""captum_robust: the robustness side of model explanations, for PyTorch and Captum."""

__version__ = "0.1.0"

"""npqwen: the Qwen2 / Qwen2.5 language models in NumPy, matched against transformers."""

from .config import Qwen2Config
from .errors import CheckpointError, ConfigError, NpqwenError
from .model import Model, ModelOutput, load_model

__all__ = ["Qwen2Config", "Model", "ModelOutput", "load_model", "NpqwenError", "ConfigError", "CheckpointError"]
__version__ = "0.1.0"

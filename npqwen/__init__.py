"""npqwen: the Qwen family of language models in NumPy, matched against transformers."""

from .cache import KVCache
from .config import ModelConfig, Qwen2Config
from .errors import CheckpointError, ConfigError, NpqwenError
from .generation import Token, generate, generate_batch
from .model import Model, ModelOutput, load_model
from .sampling import SamplingSettings
from .tokenizer import Tokenizer

__all__ = ["ModelConfig", "Qwen2Config", "Model", "ModelOutput", "load_model", "KVCache", "Tokenizer", "SamplingSettings",
           "Token", "generate", "generate_batch", "NpqwenError", "ConfigError", "CheckpointError"]
__version__ = "0.1.0"

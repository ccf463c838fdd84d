"""The one exception type npqwen raises for bad input.

Every malformed checkpoint, config, prompt or option becomes a `NpqwenError` whose message
names the file or field and what is wrong with it. The command-line tools print that
message on one line and exit with status 2; library users can catch it.
"""


class NpqwenError(ValueError):
    """Bad input: a checkpoint, config, prompt or option npqwen cannot use as given."""


class ConfigError(NpqwenError):
    """config.json is missing, not JSON, or describes a model npqwen does not implement."""


class CheckpointError(NpqwenError):
    """A weights file (safetensors or its index) is malformed or disagrees with the config."""

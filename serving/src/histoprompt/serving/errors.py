"""Per-request errors: become a Triton INVALID_ARG response, never a crashed instance."""

from __future__ import annotations

from histoprompt.core.errors import ConfigError, InvalidInputError


class RequestError(InvalidInputError):
    """One request's input is wrong (dtype, rank, size, content)."""

    code = "invalid_request"


class ModelConfigError(ConfigError):
    """A model's config.pbtxt parameters or artifacts are wrong: the model must not load."""

    code = "model_config"

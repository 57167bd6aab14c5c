"""Exception types of histoprompt.export, each carrying what was asked and what to do."""

from __future__ import annotations

from histoprompt.core.errors import ConfigError, HistopromptError, InvalidInputError


class ExportError(HistopromptError):
    """Root of histoprompt.export errors."""

    code = "export"


class UnknownEncoderError(ConfigError):
    """An encoder name that is not in the registry."""

    code = "unknown_encoder"


class HubNameError(ConfigError):
    """A model-hub name was given where a local path or s3:// URI is required."""

    code = "hub_name"


class WeightsError(ExportError):
    """A weight file is missing, unreadable, or does not match the architecture."""

    code = "weights"


class CheckpointLayoutError(WeightsError):
    """A weight file whose tensor names or shapes do not match the architecture's published
    layout; the message names the layout the file looks like, the first missing and
    unexpected tensors and the first shape mismatch."""

    code = "checkpoint_layout"


class GeneContractError(InvalidInputError):
    """Expression input that cannot be mapped onto the RNA encoder's gene order."""

    code = "gene_contract"


class ParityError(ExportError):
    """An exported model disagrees with its torch original beyond the tolerance."""

    code = "parity"


class TrainingError(ExportError):
    """Alignment training cannot run (bad config, too few patients, corrupt checkpoint)."""

    code = "training"


class OptionalDependencyError(ExportError):
    """A GPU-only dependency (tensorrt) is not installed."""

    code = "missing_dependency"

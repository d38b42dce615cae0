"""Named domain errors. Every message says what went wrong and what to do about it."""


class AgileError(Exception):
    """Base class of every error agile-modeling raises on purpose."""


class EncoderUnavailableError(AgileError):
    """An encoder's weights could not be loaded (no network, missing checkpoint, unknown model)."""


class UnknownPhraseError(AgileError):
    """A text encoder without a text tower was asked for a phrase it does not know."""


class ImageReadError(AgileError):
    """An image could not be read or decoded."""


class StoreError(AgileError):
    """The embedding store is missing, inconsistent or used with the wrong dimension."""


class SessionError(AgileError):
    """A concept session is missing, or an operation does not fit its state."""


class NotEnoughLabelsError(AgileError):
    """Training needs at least one positive and one negative label."""


class DatasetNotFoundError(AgileError):
    """The shared labeled embeddings used by simulations are not where they were looked for."""


class DatasetFormatError(AgileError):
    """A folder of labeled embeddings does not follow the documented format (docs/studies.md)."""


class DefinitionError(AgileError):
    """A structured concept definition is malformed or an edit does not fit it."""


class ProviderError(AgileError):
    """A language/vision model provider failed, refused, or answered something unusable."""


class ConfigurationError(AgileError, ValueError):
    """A setting (an environment variable, an option) has a value the program cannot use."""

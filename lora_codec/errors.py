"""Error types. Every failure a user can cause is a `LoraCodecError` with a one-line message;
the CLI prints that line and exits 2, the app shows it. Anything else is a bug."""


class LoraCodecError(Exception):
    """Base class of every error a user can cause (bad input, missing weights, limits)."""


class CodeFormatError(LoraCodecError):
    """A code file (binary or text form) is corrupt, truncated, of another version, or out of range."""


class BackboneError(LoraCodecError):
    """A backbone cannot be loaded (missing weights, offline), or a code needs a different one."""


class VideoError(LoraCodecError):
    """A clip cannot be read or written (not a video, no frames, unsupported)."""


class LimitError(LoraCodecError):
    """A request exceeds a configured limit (input bytes, duration, pixels, lengths)."""


class DecodeError(LoraCodecError):
    """Decoding a code gave values that are not finite numbers (a hostile code, or a numeric failure)."""

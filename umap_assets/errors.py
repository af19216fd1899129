"""What a failed Dagster step says, in one line: shared by the CLI's summary and slice discovery."""


def root_cause(err) -> str:
    """The first line of the innermost error under Dagster's wrappers, for a ``SerializableErrorInfo``."""
    while err.cause is not None and (err.cls_name or "").startswith("Dagster"):
        err = err.cause
    message = (err.message or "").strip().split("\n", 1)[0]
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == err.cls_name:
        message = rest  # "package.module.Class: text" -> "text"
    return message if err.cls_name in ("Failure", "SliceError", "ArtifactError", "DamagedFile") else f"{err.cls_name}: {message}"

"""The model repository: its format, the scan of it, and (in submodules) its config file.

`app.repository.format` is the format shared with the training job; `app.repository.scan` reads
a repository; `app.repository.policy` chooses the versions to serve. The names most callers need
are re-exported here; this module imports nothing beyond the standard library, so `training/`
can use it without the server's packages.
"""

from app.repository.format import (
    KERAS_ARCHIVE,
    MAX_VERSION,
    METADATA_FILE,
    SAVED_MODEL_FILES,
    ModelFormat,
    RepositoryError,
    is_version_name,
    list_versions,
    read_metadata,
)
from app.repository.policy import VersionPolicy
from app.repository.scan import (
    ModelDir,
    RepositoryProblem,
    RepositoryScan,
    VersionDir,
    check_version_files,
    scan_repository,
    scan_repository_report,
)

__all__ = [
    "KERAS_ARCHIVE",
    "MAX_VERSION",
    "METADATA_FILE",
    "SAVED_MODEL_FILES",
    "ModelDir",
    "ModelFormat",
    "RepositoryError",
    "RepositoryProblem",
    "RepositoryScan",
    "VersionDir",
    "VersionPolicy",
    "check_version_files",
    "is_version_name",
    "list_versions",
    "read_metadata",
    "scan_repository",
    "scan_repository_report",
]

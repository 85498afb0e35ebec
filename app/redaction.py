"""Keep the server's filesystem paths out of what clients read.

Load errors come from TensorFlow, the OS and our own file checks, and most of them name files by
their absolute path (`Cannot parse file b'/srv/models/mnist/3/saved_model.pb'`). Responses,
status routes and metrics must name models and versions instead: `public_text` rewrites a
message so that a path inside the model repository becomes its repository-relative name
(`mnist/3/saved_model.pb`) and any other absolute path becomes `<path>`. Logs keep the full
paths: the operator reading them owns the machine.

Apply it to text that came from a file operation (exception messages), not to messages written
here, which may name routes such as `POST /v2/repository/models/NAME/load`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# An absolute path: a slash at the start of a token (after a space, quote, bracket, '=' or ','),
# up to the next space or quote. TensorFlow's device names (`/job:localhost/...`) are kept.
_ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=,]))/(?!job:)[^\s'\"\])]+")


def public_text(text: str, repository: Path | None = None) -> str:
    """`text` with repository paths made relative and every other absolute path hidden."""
    if repository is not None:
        for root in _spellings(repository):
            # A relative spelling ("models") counts only as the start of a path ("models/x").
            ending = r"(/|(?![\w.\-]))" if os.path.isabs(root) else "(/)"
            pattern = re.compile(r"(?<![\w.\-/])" + re.escape(root) + ending)
            text = pattern.sub(lambda match: "" if match.group(1) == "/" else "<repository>", text)
    return _ABSOLUTE_PATH.sub("<path>", text)


def repository_name(path: Path, repository: Path) -> str:
    """`path` relative to the repository when it lies inside it, else only its file name."""
    for root in _spellings(repository):
        text = str(path.absolute()) if os.path.isabs(root) else str(path)
        if text.startswith(root.rstrip("/") + "/"):
            return text[len(root.rstrip("/")) + 1 :]
    return path.name


def _spellings(repository: Path) -> list[str]:
    """The ways a message may spell the repository root, longest first."""
    spellings = {str(repository), str(repository.absolute()), os.path.realpath(repository)}
    return sorted(
        (s.rstrip("/") or "/" for s in spellings if s and s != "."), key=len, reverse=True
    )

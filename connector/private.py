"""Files only the connector's own user may read: the SQLite store, the sandbox's ``.env``, reports.

They hold OAuth tokens, passwords and clients' personal data, so each is created 0600, and a
folder the connector creates for them 0700. Folders that already exist are left as they are (the
store may live in the working directory); an existing file that others can read is tightened.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parent with mode 0700 (whatever the umask)."""
    missing: list[Path] = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(p, 0o700)


def tighten(path: Path) -> None:
    """Drop group and other permissions from an existing file of ours."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, st.st_mode & 0o700)


def create_private(path: Path) -> None:
    """Make sure ``path`` exists and is 0600 (created empty if missing; folders as :func:`make_private_dirs`)."""
    make_private_dirs(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        tighten(path)


def write_private_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8), readable and writable by the owner only."""
    path = Path(path)
    create_private(path)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)

"""The template files, read without Jinja2: the snapshot a daemon starts with, and whether
that snapshot was compiled before.

``load_renderer`` compiles every template at start so that a broken edit is
refused at once. When it has done so it writes ``verified`` next to the compiled
copies: a digest of the sources, of Jinja2's and Python's versions and of the
code that sets up the environment (``render.py``: the filters a template may
name). A daemon whose snapshot has that digest knows the templates compile, and
loads Jinja2 with its first mail (``run --once`` on an empty mailbox never does).
A snapshot that did not compile before is compiled by a forked process
(``outbound.compile_aside``) while the rest of the daemon's start goes on.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from maild import installed_version
from maild.errors import MaildError

PACKAGED = Path(__file__).resolve().parents[1] / "templates"
_RENDER = Path(__file__).with_name("render.py")
VERIFIED = "verified"


class TemplateFileError(MaildError):
    """A template file cannot be read; names the file (``render.RenderError`` says so to the operator)."""


def cache_folder(storage_path: Path) -> Path:
    """Where the daemon keeps its compiled templates (``render.CompiledTemplates``) and ``verified``."""
    return storage_path / "cache" / "templates"


def search_path(templates_path: Path) -> tuple[Path, ...]:
    """The folders a template is looked up in, first wins: the operator's, then the packaged."""
    try:
        same = templates_path.resolve() == PACKAGED.resolve()
    except OSError:
        same = False
    return (templates_path,) if same else (templates_path, PACKAGED)


def read_sources(folders: tuple[Path, ...]) -> dict[str, str]:
    """``lang/name.txt`` -> its text, each from the first folder that has it (a snapshot)."""
    found: dict[str, str] = {}
    for folder in reversed(folders):
        for file in sorted(folder.glob("*/*.txt")):
            try:
                found[f"{file.parent.name}/{file.name}"] = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise TemplateFileError(f"template {file}: {exc}") from None
    return found


def sources_digest(sources: dict[str, str]) -> str:
    digest = hashlib.sha256(f"{installed_version('jinja2')}\0{sys.version_info[:3]}\0".encode())
    digest.update(_RENDER.read_bytes())
    for name in sorted(sources):
        digest.update(f"\0{name}\0{sources[name]}".encode())
    return digest.hexdigest()


def compiled_before(cache: Path, sources: dict[str, str]) -> bool:
    """Whether these sources are the ones ``load_renderer`` last compiled whole into ``cache``."""
    try:
        return (cache / VERIFIED).read_text(encoding="ascii").strip() == sources_digest(sources)
    except (OSError, UnicodeDecodeError):
        return False


def mark_compiled(cache: Path, sources: dict[str, str]) -> None:
    """Record that these sources compiled (a folder that cannot be written: the next start compiles)."""
    try:
        tmp = cache / f".{VERIFIED}.{id(sources)}"
        tmp.write_text(sources_digest(sources) + "\n", encoding="ascii")
        tmp.replace(cache / VERIFIED)
    except OSError:
        pass

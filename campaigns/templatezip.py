"""A template uploaded as a .zip: one HTML file, optionally its AMP part, and its images.

The HTML's relative paths (``images/hero.png``, ``./logo.gif``) name files of the zip;
``read_template_zip`` returns them keyed as the HTML's folder sees them, for
``template_create``/``template_version_save``'s ``assets``. The AMP part is an HTML
file named ``*.amp.html`` (or whose ``<html>`` tag carries ``⚡4email``/``amp4email``).

The zip is hostile input, read in memory and never written to disk: its size, its
number of entries and the sum of its files' sizes once uncompressed are limited
(zipfile stops reading a member at its declared size, and checks its CRC), names that
climb out of the zip are refused, and encrypted or otherwise unreadable zips get a
clear message. Each rule raises TemplateZipError saying which.
"""

import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass

from campaigns.images import MAX_BYTES, normalised_path
from campaigns.inventory import MAX_TEMPLATE_BYTES, TemplateInputError, decode_template

MAX_ZIP_BYTES = 25 * 1024 * 1024
MAX_ZIP_ENTRIES = 500
MAX_UNCOMPRESSED_BYTES = 60 * 1024 * 1024
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip

_HTML_NAME = re.compile(r"\.html?\Z", re.IGNORECASE)
_AMP_NAME = re.compile(r"\.amp\.html?\Z", re.IGNORECASE)
_AMP_TAG = re.compile(r"<html[^>]*(?:⚡4email|amp4email)", re.IGNORECASE)


class TemplateZipError(ValueError):
    """The zip cannot be used as a template; the message says why, for the form."""


@dataclass(frozen=True)
class TemplateZip:
    html: str
    amp_html: str
    assets: dict[str, bytes]  # path relative to the HTML's folder -> bytes
    html_name: str


def is_zip(head: bytes) -> bool:
    """True when ``head`` (an upload's first bytes) starts a zip archive."""
    return head.startswith(ZIP_MAGIC)


def read_template_zip(upload) -> TemplateZip:
    """The template in ``upload`` (a file object, e.g. Django's UploadedFile).

    Returns the HTML (and AMP part) decoded as decode_template decodes an .html
    upload, and every other file as ``assets``, keyed by its path relative to the
    HTML's folder (``../common/logo.png`` for a file beside that folder). Raises
    TemplateZipError for a zip that is too big, has too many entries, would unpack
    beyond MAX_UNCOMPRESSED_BYTES, holds a path that climbs out of it, is encrypted
    or damaged, or holds no HTML file or several.
    """
    size = getattr(upload, "size", None)
    if size is None:
        upload.seek(0, 2)
        size = upload.tell()
    upload.seek(0)
    if size > MAX_ZIP_BYTES:
        raise TemplateZipError(f"The zip is {_mb(size)}; it may be at most {_mb(MAX_ZIP_BYTES)}.")
    try:
        with zipfile.ZipFile(upload) as archive:
            return _read(archive)
    except TemplateZipError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise TemplateZipError(f"The zip is damaged or not a zip ({error}).") from None
    except (zipfile.LargeZipFile, NotImplementedError) as error:
        raise TemplateZipError(f"The zip uses a feature that is not supported ({error}).") from None
    except (OSError, ValueError, RuntimeError) as error:
        raise TemplateZipError(f"The zip could not be read ({error}).") from None


def _read(archive: zipfile.ZipFile) -> TemplateZip:
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise TemplateZipError(
            f"The zip holds {len(entries)} entries; it may hold at most {MAX_ZIP_ENTRIES}."
        )
    files: dict[str, zipfile.ZipInfo] = {}
    for info in entries:
        name = _member_name(info.filename)
        if name is None:
            continue
        if info.flag_bits & 0x1:
            raise TemplateZipError(f"{name} is encrypted; upload a zip without a password.")
        if name in files:
            raise TemplateZipError(f"{name} appears twice in the zip.")
        files[name] = info
    unpacked = sum(info.file_size for info in files.values())
    if unpacked > MAX_UNCOMPRESSED_BYTES:
        raise TemplateZipError(
            f"The zip would unpack to {_mb(unpacked)}; at most {_mb(MAX_UNCOMPRESSED_BYTES)} "
            "is accepted."
        )
    html_names = [name for name in files if _HTML_NAME.search(name)]
    if not html_names:
        raise TemplateZipError("The zip holds no .html file.")
    texts = {name: _html_text(archive, files[name], name) for name in html_names}
    amp = [name for name in html_names if _AMP_NAME.search(name) or _AMP_TAG.search(texts[name])]
    main = [name for name in html_names if name not in amp]
    if len(main) != 1 or len(amp) > 1:
        listed = ", ".join(sorted(html_names))
        raise TemplateZipError(
            f"The zip must hold one HTML file (and at most one AMP part named *.amp.html); "
            f"it holds {listed}."
        )
    (html_name,) = main
    folder = posixpath.dirname(html_name)
    assets = {}
    for name, info in files.items():
        if name in texts:
            continue
        if info.file_size > MAX_BYTES:
            raise TemplateZipError(
                f"{name} is {_mb(info.file_size)}; an image may be at most {_mb(MAX_BYTES)}."
            )
        assets[posixpath.relpath(name, folder or ".")] = archive.read(info)
    return TemplateZip(
        html=texts[html_name],
        amp_html=texts[amp[0]] if amp else "",
        assets=assets,
        html_name=html_name,
    )


def _member_name(raw: str) -> str | None:
    """A member's path in one spelling, None for what is not a file of the template
    (folders, macOS metadata, hidden files). A path that climbs out of the zip, or an
    absolute one, raises TemplateZipError."""
    name = raw.replace("\\", "/")
    if name.endswith("/"):
        return None
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or "\0" in name:
        raise TemplateZipError(f"{raw} is an absolute path; the zip's paths must be relative.")
    name = normalised_path(name)
    if name == ".." or name.startswith("../"):
        raise TemplateZipError(f"{raw} points outside the zip.")
    parts = name.split("/")
    if parts[0] == "__MACOSX" or parts[-1].startswith("."):
        return None
    return name


def _html_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> str:
    if info.file_size > MAX_TEMPLATE_BYTES:
        raise TemplateZipError(
            f"{name} is {_mb(info.file_size)}; a template may be at most {_mb(MAX_TEMPLATE_BYTES)}."
        )
    try:
        return decode_template(archive.read(info))
    except TemplateInputError as error:
        raise TemplateZipError(f"{name}: {error}") from None


def _mb(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"

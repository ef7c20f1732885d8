"""Static files in production: collected, or the server does not start.

With hashed names (STATIC_MANIFEST, on unless DEBUG) every page names files such as
`css/app.3f2a….css` that only `collectstatic` writes into STATIC_ROOT, and WhiteNoise
serves STATIC_ROOT alone. Without it the pages would load unstyled, their htmx dead, with
nothing but 404s to say why; so the WSGI and ASGI entry points call
`require_collected()`, which refuses to start (ImproperlyConfigured: gunicorn's workers
fail to boot and gunicorn exits) and says what to run. Without hashed names WhiteNoise
serves the source folders themselves (settings.WHITENOISE_USE_FINDERS): nothing to
collect, nothing to miss.
"""

import json
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import ImproperlyConfigured

MANIFEST_NAME = "staticfiles.json"  # ManifestStaticFilesStorage's default
SHOWN = 10  # missing files named in the message; the rest are counted


def hashed_names() -> bool:
    backend = settings.STORAGES["staticfiles"]["BACKEND"]
    return "Manifest" in backend.rsplit(".", 1)[-1]


def source_files() -> set[str]:
    """Every static file the finders know (the project's and the apps', admin included),
    by the name templates use."""
    names = set()
    for finder in finders.get_finders():
        for path, _storage in finder.list(["CVS", ".*", "*~"]):
            names.add(path.replace("\\", "/"))
    return names


def missing_files() -> tuple[Path, list[str]]:
    """(the manifest's path, the static files that STATIC_ROOT cannot serve), sorted;
    every source file is missing when there is no manifest."""
    root = Path(settings.STATIC_ROOT)
    manifest = root / MANIFEST_NAME
    try:
        paths = json.loads(manifest.read_text())["paths"]
    except (OSError, ValueError, KeyError, TypeError):
        return manifest, sorted(source_files())
    missing = [
        name for name in source_files() if name not in paths or not (root / paths[name]).is_file()
    ]
    return manifest, sorted(missing)


def require_collected() -> None:
    """Raise ImproperlyConfigured naming the missing files and the fix, when hashed
    names are on and STATIC_ROOT does not hold every static file."""
    if not hashed_names():
        return
    manifest, missing = missing_files()
    if not missing:
        return
    shown = ", ".join(missing[:SHOWN]) + (
        f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
    )
    cause = (
        f"there is no {manifest}"
        if not manifest.is_file()
        else f"{len(missing)} static file(s) are not in it: {shown}"
    )
    raise ImproperlyConfigured(
        f"Static files are not collected into STATIC_ROOT ({settings.STATIC_ROOT}): {cause}. "
        "Run `python manage.py collectstatic --noinput` with the same settings before "
        "starting the server (the Docker image does at build), or set STATIC_MANIFEST=0 "
        "to serve the source folders without hashed names."
    )

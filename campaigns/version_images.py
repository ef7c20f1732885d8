"""A template version's images: found in its HTML, fetched or uploaded, verified, stored.

Each image source of a version (campaigns/images.py finds them) gets a VersionImage
row beside the immutable version: *stored* (a content-addressed ImageBlob of the
re-encoded bytes), *pending* (a fetch is queued) or *failed* (the reason, for the
version page). A relative source names an uploaded file (``assets``) when there is
one; otherwise it is resolved against the ``<base href>`` and fetched by
campaigns/imagefetch.py in a Celery task, off the request. Fetching again changes
the rows, never the version.
"""

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import transaction

from campaigns.imagefetch import fetch_image
from campaigns.images import (
    MAX_IMAGES_PER_VERSION,
    ImageRefused,
    VerifiedImage,
    asset_path,
    base_href,
    image_sources,
    normalised_path,
    remote_url,
    verify_image,
)
from campaigns.models import ImageBlob, TemplateVersion, VersionImage

log = logging.getLogger(__name__)

# Rows kept per version: past MAX_IMAGES_PER_VERSION they only say "not fetched";
# past this, a hostile template's ten thousand images are not even listed.
MAX_ROWS_PER_VERSION = 5 * MAX_IMAGES_PER_VERSION
# Fetches at once for one version (they wait on the network, not the CPU).
FETCH_THREADS = 4


def version_images_attach(version: TemplateVersion, assets: dict[str, bytes] | None = None) -> None:
    """Give every image source of ``version`` its row: an uploaded file (``assets``:
    relative path as written in the HTML -> bytes) is verified and stored now; a web
    address is left pending and a fetch is queued for when the transaction commits;
    anything else fails with its reason. Rows that exist are kept, except that a
    source naming one of ``assets`` takes the new file. Idempotent."""
    uploads = {normalised_path(path): data for path, data in (assets or {}).items()}
    existing = {(row.format, row.src): row for row in version.images.all()}
    verified: dict[str, VerifiedImage | ImageRefused] = {}
    remote = 0
    queue = False
    for ordinal, (format, src, base) in enumerate(_sources(version)):
        if ordinal >= MAX_ROWS_PER_VERSION:
            break
        row = existing.get((format, src))
        path = asset_path(src)
        if path is not None and path in uploads:
            if path not in verified:
                verified[path] = _verified(uploads[path])
            row = row or _new_row(version, format, src, ordinal)
            row.origin, row.url = VersionImage.Origin.UPLOAD, ""
            _apply(row, _stored(verified[path]))
        elif row is not None:
            continue  # as it was: fetching again is version_images_refetch's
        elif url := remote_url(src, base):
            row = _new_row(version, format, src, ordinal)
            row.origin, row.url = VersionImage.Origin.REMOTE, url
            remote += 1
            if remote > MAX_IMAGES_PER_VERSION:
                _apply(row, _too_many())
            else:
                queue = True
        else:
            row = _new_row(version, format, src, ordinal)
            row.origin = VersionImage.Origin.UPLOAD if path is not None else row.origin
            _apply(row, _unreachable(src, path))
        row.save()
    if queue:
        _enqueue_fetch(version.pk)


def version_images_refetch(version: TemplateVersion) -> int:
    """Fetch every web image of ``version`` again (the version page's button): rows
    made for sources that have none, web rows back to pending, a fetch queued for the
    commit. Returns how many images will be fetched."""
    with transaction.atomic():
        version_images_attach(version)
        web = version.images.filter(origin=VersionImage.Origin.REMOTE)
        pending = list(web.order_by("format", "ordinal").values_list("pk", flat=True))
        pending = pending[:MAX_IMAGES_PER_VERSION]
        # The stored image (if any) stays shown until the new fetch settles the row.
        VersionImage.objects.filter(pk__in=pending).update(
            status=VersionImage.Status.PENDING, reason="", message=""
        )
        if pending:
            _enqueue_fetch(version.pk)
    return len(pending)


def version_images_fetch(version: TemplateVersion) -> int:
    """Fetch, verify and store the version's pending web images (the Celery task's
    work); each URL is fetched once however often it appears. Returns how many rows
    were settled. Holds no transaction while on the network."""
    rows = list(
        version.images.filter(
            status=VersionImage.Status.PENDING, origin=VersionImage.Origin.REMOTE
        ).order_by("format", "ordinal")
    )
    urls = list(dict.fromkeys(row.url for row in rows))
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        # Pillow decodes here, one at a time (verify_image's warning filter is global).
        bodies = zip(urls, pool.map(_fetched, urls), strict=True)
        results = {url: _stored(_verified(body)) for url, body in bodies}
    for row in rows:
        _apply(row, results[row.url])
        # Only a row still pending: a fetch queued meanwhile wins over this older one.
        VersionImage.objects.filter(pk=row.pk, status=VersionImage.Status.PENDING).update(
            status=row.status, blob_id=row.blob_id, reason=row.reason, message=row.message
        )
    return len(rows)


def version_images_for_render(version_id: int, format: str) -> dict[str, tuple[str, bytes]]:
    """The version's stored images of one part (``format`` html or amp), for the
    preview: source as written -> (MIME type, bytes). An image being fetched again
    shows its last stored bytes. Read across scopes: previews render in workers."""
    rows = (
        VersionImage.objects.with_scopes_disabled()
        .filter(version_id=version_id, format=format, blob__isnull=False)
        .select_related("blob")
    )
    return {row.src: (row.blob.mime, bytes(row.blob.data)) for row in rows}


def version_image_digests(version_id: int, format: str) -> list[tuple[str, str]]:
    """(source, digest) of the part's stored images, sorted: what a preview depends on."""
    return sorted(
        VersionImage.objects.with_scopes_disabled()
        .filter(version_id=version_id, format=format, blob__isnull=False)
        .values_list("src", "blob_id")
    )


def _sources(version: TemplateVersion):
    for format, source in (("html", version.html), ("amp", version.amp_html)):
        if source:
            base = base_href(source)
            for src in image_sources(source):
                yield format, src, base


def _new_row(version, format: str, src: str, ordinal: int) -> VersionImage:
    key = hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
    return VersionImage(version=version, format=format, src=src, src_key=key, ordinal=ordinal)


def _verified(data: bytes | ImageRefused) -> VerifiedImage | ImageRefused:
    if isinstance(data, ImageRefused):
        return data
    try:
        return verify_image(data)
    except ImageRefused as refusal:
        return refusal


def _fetched(url: str) -> bytes | ImageRefused:
    """The body at ``url`` (runs on a fetch thread: network only, no database)."""
    try:
        return fetch_image(url).data
    except ImageRefused as refusal:
        log.info("Image %s not stored: %s", url, refusal.message)
        return refusal
    except Exception as error:  # one broken image must not lose the others' results
        log.exception("Fetching image %s failed", url)
        return ImageRefused("error", f"The image could not be fetched ({type(error).__name__}).")


def _stored(result: VerifiedImage | ImageRefused) -> ImageBlob | ImageRefused:
    """The blob of a verified image (created once per digest), or the refusal."""
    if isinstance(result, ImageRefused):
        return result
    digest = hashlib.sha256(result.data).hexdigest()
    ImageBlob.objects.bulk_create(
        [
            ImageBlob(
                digest=digest,
                mime=result.mime,
                data=result.data,
                width=result.width,
                height=result.height,
            )
        ],
        ignore_conflicts=True,  # the same bytes stored already, or at this moment
    )
    return ImageBlob(digest=digest, mime=result.mime, width=result.width, height=result.height)


def _apply(row: VersionImage, result: ImageBlob | ImageRefused) -> None:
    if isinstance(result, ImageRefused):
        row.status, row.blob = VersionImage.Status.FAILED, None
        row.reason, row.message = result.code, result.message
    else:
        row.status, row.blob = VersionImage.Status.STORED, result
        row.reason = row.message = ""


def _too_many() -> ImageRefused:
    return ImageRefused(
        "too-many", f"Only the first {MAX_IMAGES_PER_VERSION} web images of a version are fetched."
    )


def _unreachable(src: str, path: str | None) -> ImageRefused:
    if path is not None:
        return ImageRefused(
            "missing",
            f"No file {path} was uploaded with the template (upload a .zip with the "
            "HTML and its images), and no <base href> makes it a web address.",
        )
    return ImageRefused("scheme", "Only http(s) addresses and uploaded files are shown.")


def _enqueue_fetch(version_id: int) -> None:
    from campaigns.tasks import fetch_version_images_task

    # robust: a broker that is down must not fail a save that has committed.
    transaction.on_commit(lambda: fetch_version_images_task.delay(version_id), robust=True)

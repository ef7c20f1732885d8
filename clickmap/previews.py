"""Stored previews: render once per version × format × device (× customer), then serve.

``preview_for`` is what views call: it returns the Preview row at once, done or not,
and queues the render (Celery task ``clickmap.render_preview``) when one is needed.
``render_stored_preview`` does the work for a row, idempotently.

Every preview is personalised: the shared one for a sample customer (the workspace's
first unless the page names another; with none, an empty one), where a name the customer
lacks renders as nothing rather than failing, so no raw ``{{ … }}`` ever shows; "Preview
for" (``exact``) renders exactly what that customer was sent, failing where a send
would. Every link's href is replaced by a marker naming its TemplateLink
(campaigns.personalise tracks links by their place in the source), so a loop that
repeats a link gives that link one box per copy. Outlook-only links show on their
visible twin's boxes.

Every preview shows the version's stored images (campaigns/version_images.py) where
it has them, and their digests are part of a preview's input: a preview renders again
once images arrive or change.
"""

import dataclasses
import hashlib
import io
import json
import logging
import re
import time
from datetime import timedelta

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image, ImageChops

from campaigns.models import Customer, TemplateLink, TemplateVersion
from campaigns.personalise import PersonaliseError, customer_context, render, tracked_source
from campaigns.version_images import version_image_digests, version_images_for_render
from clickmap import render as renderer
from clickmap import telemetry
from clickmap.models import Preview

log = logging.getLogger(__name__)

# Bump when the renderer's output changes, so stored previews render again.
RENDERER_VERSION = "2"  # 2: boxes are everything a link draws; personalised for a sample
# A pending or running row older than this lost its worker: it is queued again.
STALE_AFTER = timedelta(minutes=5)


def preview_for(
    version: TemplateVersion,
    format: str,
    device: str,
    customer: Customer | None = None,
    *,
    exact: bool = False,
) -> Preview:
    """The preview of ``version`` in ``format`` for ``device``, personalised for
    ``customer`` as a sample (missing names render as nothing), or, ``exact``, as that
    customer was sent it; without its image bytes. Created and queued when missing; a
    done preview of the same input is returned as it is (the cached path: at most two
    queries). A failed one is returned with its error; it renders again once its input
    changed.
    """
    if format not in Preview.Format.values:
        raise ValueError(f"format must be one of {Preview.Format.values}, not {format!r}")
    if device not in Preview.Device.values:
        raise ValueError(f"device must be one of {Preview.Device.values}, not {device!r}")
    workspace_id = version.template.workspace_id
    if customer is not None and customer.workspace_id != workspace_id:
        raise ValueError("The customer belongs to another workspace than the template.")
    if exact and customer is None:
        raise ValueError("An exact preview is a customer's: name the customer.")
    digest = _input_hash(version, format, customer, exact)
    previews = Preview.objects.with_scopes_disabled().defer("image")
    lookup = {
        "version": version,
        "format": format,
        "device": device,
        "customer": customer,
        "exact": exact,
    }
    preview = previews.filter(**lookup).first()
    if preview is None:
        try:
            with transaction.atomic():
                created = Preview.objects.with_scopes_disabled().create(
                    workspace_id=workspace_id, input_hash=digest, **lookup
                )
        except IntegrityError:
            pass  # created meanwhile by another request, which queued it
        else:
            _enqueue(created.pk)
        return previews.get(**lookup)  # rendered already when tasks run inline
    if _needs_render(preview, digest):
        # Only the request that moves the row back to pending queues it.
        moved = (
            Preview.objects.with_scopes_disabled()
            .filter(pk=preview.pk, status=preview.status, updated_at=preview.updated_at)
            .update(
                status=Preview.Status.PENDING,
                input_hash=digest,
                error="",
                updated_at=timezone.now(),
            )
        )
        if moved:
            _enqueue(preview.pk)
        preview = previews.get(pk=preview.pk)
    return preview


def sample_customer(workspace_id: int) -> Customer | None:
    """Whose data personalises a workspace's shared previews unless the page names
    someone else: the workspace's first customer (None when it has none)."""
    return (
        Customer.objects.with_scopes_disabled()
        .filter(workspace_id=workspace_id)
        .order_by("pk")
        .first()
    )


def render_stored_preview(preview_id: int) -> Preview | None:
    """Render one Preview row and store the picture, boxes and timing, or the reason it
    failed. Idempotent: a row that is done, or running in a live worker, is left
    alone; None when the row is gone."""
    previews = Preview.objects.with_scopes_disabled()
    claimable = previews.filter(pk=preview_id).exclude(status=Preview.Status.DONE)
    claimable = claimable.exclude(
        status=Preview.Status.RUNNING, updated_at__gt=timezone.now() - STALE_AFTER
    )
    if not claimable.update(status=Preview.Status.RUNNING, updated_at=timezone.now()):
        return previews.filter(pk=preview_id).defer("image").first()
    preview = previews.select_related("version", "customer").get(pk=preview_id)
    preview.notice = ""
    started = time.perf_counter()
    try:
        result = _render(preview)
    except (renderer.RenderError, PersonaliseError) as error:
        _failed(preview, str(error))
    except Exception as error:
        log.exception("Preview %s failed", preview_id)
        _failed(preview, f"The preview could not be rendered ({type(error).__name__}: {error}).")
    else:
        preview.status = Preview.Status.DONE
        preview.error = ""
        preview.image = result.image
        preview.mime = result.mime
        preview.width = result.width
        preview.height = result.height
        preview.scale = result.scale
        preview.boxes = {
            str(link_id): [list(b) for b in found] for link_id, found in result.boxes.items()
        }
        preview.render_ms = result.render_ms
    preview.save()
    telemetry.PREVIEW_RENDER_SECONDS.observe(time.perf_counter() - started)
    telemetry.PREVIEW_RENDERS.labels(preview.status).inc()  # done or failed
    return preview


def _failed(preview: Preview, reason: str) -> None:
    preview.status = Preview.Status.FAILED
    preview.error = reason
    preview.image, preview.mime, preview.boxes = b"", "", {}
    preview.width = preview.height = 0
    preview.render_ms = None


def _links(preview: Preview) -> list[dict]:
    return list(
        TemplateLink.objects.with_scopes_disabled()
        .filter(version=preview.version, format=preview.format)
        .order_by("ordinal")
        .values("pk", "xpath", "mso", "twin_id", "source_index")
    )


def _source(preview: Preview) -> str:
    version = preview.version
    source = version.amp_html if preview.format == Preview.Format.AMP else version.html
    if not source:
        raise renderer.RenderError(f"This version has no {preview.get_format_display()} part.")
    return source


def preview_document(preview: Preview, links: list[dict] | None = None) -> str:
    """The HTML a preview renders: the version's part personalised as the preview says
    (for its sample customer, or exactly for its customer), every link's href the
    marker of its inventory row. Raises RenderError or PersonaliseError."""
    source = _source(preview)
    links = _links(preview) if links is None else links
    return _personalised(source, links, preview.customer, lenient=not preview.exact)


def _render(preview: Preview) -> renderer.RenderResult:
    """The render of a preview. A shared preview whose personalisation cannot run at all
    (invalid Jinja, the sandbox refusing it) shows the template's markup with the
    personalisation left out, boxes by xpath, and says so in ``preview.notice``; an
    exact one fails, as the send would."""
    links = _links(preview)
    images = version_images_for_render(preview.version.pk, preview.format)
    try:
        html = preview_document(preview, links)
    except PersonaliseError as error:
        if preview.exact:
            raise
        preview.notice = (
            f"Shown without its personalisation, which cannot run: {error} "
            "Every send of this version would fail."
        )
        html = _JINJA.sub("", _source(preview))
        xpaths = {link["pk"]: link["xpath"] for link in links if not link["mso"]}
        result = renderer.render_preview(html, preview.device, xpaths, images=images)
    else:
        result = renderer.render_preview(html, preview.device, marker_links=True, images=images)
    boxes = {link["pk"]: result.boxes.get(link["pk"], []) for link in links}
    for link in links:
        if link["mso"]:
            boxes[link["pk"]] = list(boxes.get(link["twin_id"], [])) if link["twin_id"] else []
    return dataclasses.replace(result, boxes=boxes)


# Jinja's expressions, statements and comments: text between elements or inside attribute
# values, so taking them out changes no element and no xpath.
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _personalised(source: str, links: list[dict], customer: Customer | None, lenient: bool) -> str:
    """The source rendered for ``customer`` (None: no data at all), each link's href the
    marker of its row; ``lenient`` as campaigns.personalise.render has it."""
    link_ids: dict[int, int] = {}
    for link in links:
        if link["source_index"] >= 0:
            link_ids.setdefault(link["source_index"], link["pk"])  # clones share a tag
    context = customer_context(customer) if customer is not None else {}
    context["unsubscribe_url"] = f"{renderer.MARKER_PREFIX}unsubscribe"

    def marker(link_id: int, url: str) -> str:
        return f"{renderer.MARKER_PREFIX}{link_id}"

    return render(tracked_source(source, link_ids), context, marker, lenient=lenient)


def _needs_render(preview: Preview, digest: str) -> bool:
    if preview.input_hash != digest:
        return True
    if preview.status in (Preview.Status.DONE, Preview.Status.FAILED):
        return False
    return preview.updated_at < timezone.now() - STALE_AFTER  # its task was lost


def _input_hash(
    version: TemplateVersion, format: str, customer: Customer | None, exact: bool
) -> str:
    """What a render depends on: the version's content and stored images, the
    customer's data and whether the render is exact, the renderer."""
    data = [RENDERER_VERSION, version.content_hash, format, exact]
    data.append(version_image_digests(version.pk, format))
    if customer is not None:
        data.append(customer_context(customer))
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _enqueue(preview_id: int) -> None:
    from clickmap.tasks import render_preview_task

    transaction.on_commit(lambda: render_preview_task.delay(preview_id))


# A template list's thumbnail: the top of the desktop preview, this wide (px).
THUMBNAIL_WIDTH = 240
THUMBNAIL_MAX_HEIGHT = 300
THUMBNAIL_CACHE_SECONDS = 7 * 24 * 3600


def version_thumbnail(version: TemplateVersion) -> Preview:
    """The preview a version's thumbnail is cut from: the shared desktop HTML preview
    (the one the click map shows), created and queued like any other."""
    return preview_for(version, "html", "desktop", sample_customer(version.template.workspace_id))


@dataclasses.dataclass(frozen=True)
class Thumbnail:
    png: bytes
    width: int
    height: int


def thumbnail(preview: Preview) -> Thumbnail:
    """The top of a done preview as a PNG THUMBNAIL_WIDTH px wide, cut at
    THUMBNAIL_MAX_HEIGHT: the columns the email paints (a desktop render centres a
    600 px email in 1280 px of page background, which would shrink it to a strip), scaled
    to the width. Cached by the preview's input: a preview rendered again for new
    content or images gets a new thumbnail."""
    # The cache outlives processes: the key names everything the thumbnail depends on.
    key = f"thumbnail:2:{preview.pk}:{preview.input_hash}:{THUMBNAIL_WIDTH}x{THUMBNAIL_MAX_HEIGHT}"
    found = cache.get(key)
    if found is not None:
        return found
    data = Preview.objects.with_scopes_disabled().values_list("image", flat=True).get(pk=preview.pk)
    with Image.open(io.BytesIO(bytes(data))) as picture:
        picture = picture.convert("RGB")
        left, right = _painted_columns(picture)
        picture = picture.crop((left, 0, right, picture.height))
        height = max(1, round(picture.height * THUMBNAIL_WIDTH / picture.width))
        picture = picture.resize((THUMBNAIL_WIDTH, height), Image.Resampling.LANCZOS)
        picture = picture.crop((0, 0, THUMBNAIL_WIDTH, min(height, THUMBNAIL_MAX_HEIGHT)))
        out = io.BytesIO()
        picture.save(out, "PNG", optimize=True)
    found = Thumbnail(out.getvalue(), picture.width, picture.height)
    cache.set(key, found, THUMBNAIL_CACHE_SECONDS)
    return found


def _painted_columns(picture: Image.Image) -> tuple[int, int]:
    """The left and right edges of what differs from the page background (the top-left
    pixel's colour), kept symmetric about the centre; the whole width when nothing does."""
    background = Image.new("RGB", picture.size, picture.getpixel((0, 0)))
    box = ImageChops.difference(picture, background).getbbox()
    if box is None:
        return 0, picture.width
    margin = min(box[0], picture.width - box[2])
    return margin, picture.width - margin


# The editor's live preview of unsaved source: at most this many characters.
DRAFT_MAX_CHARS = 2_000_000


class DraftError(ValueError):
    """The draft cannot be previewed; the message says why, for the editor."""


@dataclasses.dataclass(frozen=True)
class DraftPreview:
    image: bytes
    mime: str
    width: int
    height: int
    notice: str = ""  # shown beside the picture (personalisation left out)


def draft_preview(
    source: str,
    device: str,
    customer: Customer | None,
    images: dict[str, tuple[str, bytes]] | None = None,
    part: str = "HTML",
) -> DraftPreview:
    """Unsaved HTML as Chromium shows it, in the same isolation as every preview
    (JavaScript off, no request leaves the browser): personalised leniently for
    ``customer`` (the sample), with ``images`` (src as written -> (MIME, bytes), e.g. the
    template's latest version's stored images) in place of their placeholders. Nothing
    is stored. Raises DraftError (empty or too long source, Chromium failing), naming
    ``part`` ("HTML" or "AMP part")."""
    if not source.strip():
        raise DraftError(f"There is no {part} to preview yet.")
    if len(source) > DRAFT_MAX_CHARS:
        raise DraftError(f"The {part} is longer than {DRAFT_MAX_CHARS:,} characters.")
    notice = ""
    try:
        html = _personalised(source, [], customer, lenient=True)
    except PersonaliseError as error:
        notice = f"Shown without its personalisation, which cannot run: {error}"
        html = _JINJA.sub("", source)
    try:
        result = renderer.render_preview(html, device, images=images)
    except renderer.RenderError as error:
        raise DraftError(str(error)) from error
    return DraftPreview(result.image, result.mime, result.width, result.height, notice)

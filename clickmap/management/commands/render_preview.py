"""``python manage.py render_preview FILE.html --device desktop|mobile [--json]``: the
preview render of a standalone HTML file, and where each inventory link is drawn.

A command-line contract (README, "The click map"): with ``--json`` it prints one object,

- ``context``: ``viewport`` (``width``, ``height``), ``device_scale_factor`` and
  ``is_mobile``, the browser context the document was laid out in;
- ``html``: the document exactly as Chromium loaded it (images inlined as ``data:``
  URLs, so loading it again in that context lays it out the same);
- ``links``: one ``{"xpath", "boxes"}`` per inventory row, in inventory order, each box
  ``[x, y, width, height]`` in CSS px from the document's top left (clickmap/render.py:
  everything the browser draws for the link). Outlook-only rows carry their visible
  twin's boxes, as the click map shows them; a link the browser does not draw has none.

It renders at a pixel ratio of 1 unless ``--scale`` says otherwise: Chromium snaps layout
to device pixels, so boxes hold for the ratio they were measured at. Images with a
relative path are read from the file's folder (verified as a template upload's are);
web images keep their sized placeholder: the command fetches nothing. Needs no database.
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.images import asset_images, asset_path, image_sources
from campaigns.inventory import FORMATS, TemplateInputError, inventory_links, read_template_file
from clickmap import render

MAX_IMAGE_FILE = 10 * 1024 * 1024  # larger files are left to their placeholder


def _files_beside(path: Path, html: str) -> dict[str, bytes]:
    """The files the email's relative image sources name, read from its folder (never
    above it), as template_create's ``assets`` takes them."""
    folder = path.resolve().parent
    files = {}
    for src in image_sources(html):
        relative = asset_path(src)
        if relative is None:
            continue
        candidate = (folder / relative).resolve()
        if not candidate.is_relative_to(folder) or not candidate.is_file():
            continue
        if candidate.stat().st_size <= MAX_IMAGE_FILE:
            files[relative] = candidate.read_bytes()
    return files


class Command(BaseCommand):
    help = (
        "Render a standalone HTML email in Chromium for desktop or mobile and print where "
        "each of its links is drawn (no database needed)."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("file", help="the HTML (or AMP HTML) email file")
        parser.add_argument("--device", choices=tuple(render.DEVICES), default="desktop")
        parser.add_argument("--format", choices=FORMATS, default="html", help="default html")
        parser.add_argument(
            "--scale",
            type=float,
            default=1.0,
            help="device pixel ratio to lay out and measure at (default 1)",
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="print the JSON contract"
        )

    def handle(self, *args, file, device, format, scale, as_json, **options):
        if not 0.5 <= scale <= 4:
            raise CommandError("--scale must be between 0.5 and 4.")
        try:
            html = read_template_file(Path(file))
            rows = inventory_links(html, format)
        except TemplateInputError as error:
            raise CommandError(f"{file}: {error}") from None
        xpaths = {i: row.xpath for i, row in enumerate(rows) if not row.mso}
        images = asset_images(html, _files_beside(Path(file), html))
        try:
            result = render.render_preview(
                html, device, xpaths, scale=scale, picture=False, images=images
            )
        except render.RenderError as error:
            raise CommandError(str(error)) from None
        finally:
            render.shutdown()
        by_xpath = {row.xpath: i for i, row in enumerate(rows)}
        links = []
        for i, row in enumerate(rows):
            shown = i if not row.mso else by_xpath.get(row.twin_xpath)
            boxes = result.boxes.get(shown, []) if shown is not None else []
            links.append({"xpath": row.xpath, "boxes": [list(box) for box in boxes]})
        if as_json:
            options = render.context_options(device, result.scale)
            context = {
                "viewport": options["viewport"],
                "device_scale_factor": options["device_scale_factor"],
                "is_mobile": options["is_mobile"],
            }
            out = {"context": context, "html": result.html, "links": links}
            self.stdout.write(json.dumps(out, ensure_ascii=False))
            return
        self.stdout.write(f"{device}, {result.width}×{result.height} CSS px at ×{result.scale:g}")
        for i, (row, link) in enumerate(zip(rows, links, strict=True)):
            boxes = " ".join("[" + ", ".join(f"{v:g}" for v in box) + "]" for box in link["boxes"])
            self.stdout.write(f"{i:>3}  {boxes or '(not drawn)'}  {row.xpath}")

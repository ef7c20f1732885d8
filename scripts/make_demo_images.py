"""Draw the demo emails' images once: `python scripts/make_demo_images.py`.

The product ships the files this writes (clickmap/demo_emails/images/), not this
script: seed_demo only reads them. Everything is drawn from shapes, gradients and
DejaVu text (Debian's fonts-dejavu-core), deterministically, so a rerun writes the
same pictures. Photos are JPEG (quality 80), flat art is palette PNG, and every
picture is drawn at twice the size the HTML shows it (sharp on high-density screens).
"""

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

OUT = Path(__file__).resolve().parents[1] / "clickmap" / "demo_emails" / "images"
FONTS = Path("/usr/share/fonts/truetype/dejavu")

FOREST = (31, 77, 58)
CREAM = (246, 241, 231)
SAND = (233, 223, 204)
RUST = (200, 85, 61)
CHARCOAL = (29, 29, 27)
GOLD = (242, 177, 52)
WHITE = (255, 255, 255)

SS = 2  # supersampling: draw at twice the size, then scale down (smooth edges)


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / name), size)


def gradient(size, top, bottom, horizontal=False) -> Image.Image:
    """A two-colour linear gradient."""
    mask = Image.linear_gradient("L")
    if horizontal:
        mask = mask.rotate(90, expand=True).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mask = mask.resize(size)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def ridge(rng, width, base, height, roughness, steps=18):
    """A mountain ridge polygon from x=0 to x=width, closed along the bottom."""
    points = [(0, base - rng.uniform(0.2, 0.6) * height)]
    for i in range(1, steps + 1):
        x = width * i / steps
        peak = height * (0.45 + 0.55 * abs(rng.gauss(0, 0.6)))
        points.append((x, base - min(peak, height) + rng.uniform(-roughness, roughness)))
    return [*points, (width, 10_000), (0, 10_000)]


def pine(draw, x, y, height, colour):
    """A stylised pine tree standing at (x, y)."""
    width = height * 0.42
    for tier in range(3):
        top = y - height + tier * height * 0.22
        bottom = y - height * 0.15 - (2 - tier) * height * 0.18
        spread = width * (0.55 + tier * 0.22)
        draw.polygon([(x, top), (x - spread / 2, bottom), (x + spread / 2, bottom)], fill=colour)
    draw.rectangle([x - height * 0.03, y - height * 0.16, x + height * 0.03, y], fill=colour)


def landscape(size, seed, sky, layers, sun=None, trees=None, haze=True) -> Image.Image:
    """Layered mountains under a gradient sky: ``layers`` are colours, far to near."""
    w, h = size[0] * SS, size[1] * SS
    rng = random.Random(seed)
    image = gradient((w, h), sky[0], sky[1])
    if sun:
        glow = Image.new("L", (w, h), 0)
        cx, cy, r = sun[0] * w, sun[1] * h, sun[2] * w
        ImageDraw.Draw(glow).ellipse([cx - r * 3, cy - r * 3, cx + r * 3, cy + r * 3], fill=110)
        glow = glow.filter(ImageFilter.GaussianBlur(r * 1.5))
        image = Image.composite(Image.new("RGB", (w, h), sun[3]), image, glow)
        ImageDraw.Draw(image).ellipse([cx - r, cy - r, cx + r, cy + r], fill=sun[3])
    draw = ImageDraw.Draw(image)
    count = len(layers)
    for i, colour in enumerate(layers):
        base = h * (0.55 + 0.45 * (i + 1) / (count + 0.3))
        draw.polygon(ridge(rng, w, base, h * (0.32 - i * 0.04), h * 0.02), fill=colour)
        if trees and i >= count - 2:
            for _ in range(trees if i == count - 1 else trees // 2):
                x = rng.uniform(0, w)
                tree_h = h * (0.16 + 0.1 * rng.random()) * (1.3 if i == count - 1 else 0.8)
                pine(draw, x, base + h * 0.06 + rng.uniform(0, h * 0.05), tree_h, colour)
        if haze and i < count - 1:
            veil = Image.new("RGB", (w, h), sky[1])
            image = Image.blend(image, veil, 0.08)
            draw = ImageDraw.Draw(image)
    return image


def spaced_text(draw, xy, text, fnt, fill, spacing=0, anchor="la"):
    """Text with extra letter spacing; ``anchor`` 'la' (left) or 'ma' (centre)."""
    widths = [draw.textlength(c, font=fnt) for c in text]
    total = sum(widths) + spacing * (len(text) - 1)
    x, y = xy
    if anchor == "ma":
        x -= total / 2
    for c, cw in zip(text, widths, strict=True):
        draw.text((x, y), c, font=fnt, fill=fill)
        x += cw + spacing
    return total


def finish(image: Image.Image, size) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS)


def save_jpeg(image: Image.Image, name: str):
    image.convert("RGB").save(OUT / name, "JPEG", quality=80, optimize=True, progressive=True)


def save_png(image: Image.Image, name: str, colours=64):
    """Palette PNG; transparency kept as one palette entry."""
    if image.mode == "RGBA":
        alpha = image.getchannel("A")
        flat = Image.new("RGB", image.size, WHITE)
        flat.paste(image, mask=alpha)
        paletted = flat.quantize(colours - 1, method=Image.Quantize.MEDIANCUT, dither=0)
        palette = paletted.getpalette()[: (colours - 1) * 3] + [0, 255, 0]
        paletted.putpalette(palette)
        transparent = alpha.point(lambda a: 255 if a < 96 else 0)
        paletted.paste(colours - 1, mask=transparent)
        paletted.save(OUT / name, optimize=True, transparency=colours - 1)
    else:
        image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=0).save(
            OUT / name, optimize=True
        )


# ---------------------------------------------------------------------------------------
# Brand


def mark(draw, x, y, size, colour, accent):
    """The Fernhill mark: two peaks and a fern frond in a circle."""
    draw.ellipse([x, y, x + size, y + size], outline=colour, width=max(2, int(size // 14)))
    base = y + size * 0.72
    draw.polygon(
        [(x + size * 0.18, base), (x + size * 0.42, y + size * 0.3), (x + size * 0.62, base)],
        fill=colour,
    )
    draw.polygon(
        [(x + size * 0.45, base), (x + size * 0.64, y + size * 0.42), (x + size * 0.84, base)],
        fill=accent,
    )
    draw.rectangle([x + size * 0.16, base, x + size * 0.86, base + size * 0.05], fill=colour)


def logo(colour, accent, name):
    """180 x 40 (shown size): the mark, then the word mark sized to fill the rest."""
    w, h = 180 * 2 * SS, 40 * 2 * SS
    image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    mark(draw, 2 * SS, 4 * SS, h - 8 * SS, colour, accent)
    left = h + 12 * SS
    size = 48 * SS
    while True:
        fnt = font("DejaVuSans-Bold.ttf", size)
        spacing = size // 7
        width = sum(draw.textlength(c, font=fnt) for c in "FERNHILL") + spacing * 7
        if left + width <= w - 4 * SS:
            break
        size -= SS
    top = (h - fnt.getbbox("FERNHILL")[3]) / 2
    spaced_text(draw, (left, top), "FERNHILL", fnt, colour, spacing=spacing)
    save_png(finish(image, (360, 80)), name, colours=32)


def social_icons():
    """Instagram, Facebook, YouTube and Pinterest glyphs in circles, two colourings."""
    for suffix, circle, glyph in (("", FOREST, WHITE), ("-light", WHITE, CHARCOAL)):
        for network in ("instagram", "facebook", "youtube", "pinterest"):
            s = 64 * SS * 2
            image = Image.new("RGBA", (s, s), (0, 0, 0, 0))
            draw = ImageDraw.Draw(image)
            draw.ellipse([0, 0, s - 1, s - 1], fill=circle)
            c = s / 2
            if network == "instagram":
                r = s * 0.24
                draw.rounded_rectangle(
                    [c - r, c - r, c + r, c + r],
                    radius=r * 0.45,
                    outline=glyph,
                    width=int(s * 0.05),
                )
                draw.ellipse(
                    [c - r * 0.45, c - r * 0.45, c + r * 0.45, c + r * 0.45],
                    outline=glyph,
                    width=int(s * 0.05),
                )
                draw.ellipse([c + r * 0.5, c - r * 0.72, c + r * 0.72, c - r * 0.5], fill=glyph)
            elif network == "facebook":
                f = font("DejaVuSans-Bold.ttf", int(s * 0.6))
                draw.text((c + s * 0.02, c + s * 0.05), "f", font=f, fill=glyph, anchor="mm")
            elif network == "youtube":
                draw.rounded_rectangle(
                    [c - s * 0.26, c - s * 0.18, c + s * 0.26, c + s * 0.18],
                    radius=s * 0.08,
                    fill=glyph,
                )
                draw.polygon(
                    [(c - s * 0.07, c - s * 0.1), (c - s * 0.07, c + s * 0.1), (c + s * 0.1, c)],
                    fill=circle,
                )
            else:
                f = font("DejaVuSerif-Bold.ttf", int(s * 0.56))
                draw.text((c, c + s * 0.03), "P", font=f, fill=glyph, anchor="mm")
            save_png(finish(image, (64, 64)), f"social-{network}{suffix}.png", colours=16)


# ---------------------------------------------------------------------------------------
# Products: stylised studio shots


def studio(seed, top, bottom):
    s = 480 * SS
    image = gradient((s, s), top, bottom)
    shadow = Image.new("L", (s, s), 0)
    ImageDraw.Draw(shadow).ellipse([s * 0.2, s * 0.8, s * 0.8, s * 0.88], fill=90)
    shadow = shadow.filter(ImageFilter.GaussianBlur(s * 0.025))
    darker = tuple(int(c * 0.72) for c in bottom)
    return Image.composite(Image.new("RGB", (s, s), darker), image, shadow), s


def shade(colour, factor):
    return tuple(max(0, min(255, int(c * factor))) for c in colour)


def scaled(points, s):
    return [(x * s, y * s) for x, y in points]


def product_parka(colour):
    image, s = studio(1, (236, 232, 224), (214, 207, 195))
    d = ImageDraw.Draw(image)
    body = [
        (0.34, 0.28),
        (0.66, 0.28),
        (0.74, 0.34),
        (0.86, 0.72),
        (0.76, 0.75),
        (0.7, 0.52),
        (0.7, 0.84),
        (0.3, 0.84),
        (0.3, 0.52),
        (0.24, 0.75),
        (0.14, 0.72),
        (0.26, 0.34),
    ]
    d.polygon(scaled(body, s), fill=colour)
    d.ellipse(scaled([(0.37, 0.13), (0.63, 0.36)], s), fill=shade(colour, 0.85))
    d.ellipse(scaled([(0.41, 0.18), (0.59, 0.34)], s), fill=shade(colour, 0.45))
    d.line(scaled([(0.5, 0.34), (0.5, 0.84)], s), fill=shade(colour, 0.55), width=int(s * 0.008))
    for y in (0.46, 0.6, 0.74):  # quilting
        d.line(scaled([(0.3, y), (0.7, y)], s), fill=shade(colour, 0.8), width=int(s * 0.005))
    d.rectangle(
        scaled([(0.34, 0.62), (0.45, 0.7)], s), outline=shade(colour, 0.6), width=int(s * 0.005)
    )
    d.rectangle(
        scaled([(0.55, 0.62), (0.66, 0.7)], s), outline=shade(colour, 0.6), width=int(s * 0.005)
    )
    return image


def product_fleece(colour):
    image, s = studio(2, (231, 236, 232), (205, 214, 207))
    d = ImageDraw.Draw(image)
    body = [
        (0.36, 0.26),
        (0.64, 0.26),
        (0.76, 0.32),
        (0.86, 0.74),
        (0.76, 0.76),
        (0.7, 0.5),
        (0.7, 0.82),
        (0.3, 0.82),
        (0.3, 0.5),
        (0.24, 0.76),
        (0.14, 0.74),
        (0.24, 0.32),
    ]
    d.polygon(scaled(body, s), fill=colour)
    d.polygon(
        scaled([(0.4, 0.2), (0.6, 0.2), (0.62, 0.3), (0.38, 0.3)], s), fill=shade(colour, 0.8)
    )
    d.line(scaled([(0.5, 0.22), (0.5, 0.48)], s), fill=shade(colour, 0.5), width=int(s * 0.01))
    d.ellipse(scaled([(0.485, 0.47), (0.515, 0.5)], s), fill=(200, 200, 200))
    d.rectangle(scaled([(0.3, 0.76), (0.7, 0.82)], s), fill=shade(colour, 0.8))
    return image


def product_boots(colour):
    image, s = studio(3, (240, 233, 222), (219, 205, 186))
    d = ImageDraw.Draw(image)
    for dx, tone in ((0.1, 0.8), (-0.06, 1.0)):
        boot = [
            (0.34, 0.24),
            (0.52, 0.24),
            (0.54, 0.58),
            (0.74, 0.64),
            (0.8, 0.72),
            (0.8, 0.78),
            (0.3, 0.78),
            (0.3, 0.5),
        ]
        d.polygon(scaled([(x + dx, y) for x, y in boot], s), fill=shade(colour, tone))
        d.rectangle(scaled([(0.29 + dx, 0.77), (0.81 + dx, 0.83)], s), fill=(40, 36, 32))
        for i in range(4):
            y = 0.32 + i * 0.065
            d.line(
                scaled([(0.4 + dx, y), (0.5 + dx, y + 0.02)], s),
                fill=(236, 220, 190),
                width=int(s * 0.008),
            )
        d.rectangle(scaled([(0.33 + dx, 0.24), (0.53 + dx, 0.27)], s), fill=shade(colour, 0.6))
    return image


def product_backpack(colour):
    image, s = studio(4, (234, 232, 238), (210, 207, 218))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle(scaled([(0.28, 0.2), (0.72, 0.82)], s), radius=s * 0.08, fill=colour)
    d.rounded_rectangle(
        scaled([(0.27, 0.18), (0.73, 0.36)], s), radius=s * 0.07, fill=shade(colour, 0.8)
    )
    d.rounded_rectangle(
        scaled([(0.34, 0.5), (0.66, 0.76)], s), radius=s * 0.05, fill=shade(colour, 0.85)
    )
    d.line(scaled([(0.36, 0.56), (0.64, 0.56)], s), fill=(30, 30, 30), width=int(s * 0.008))
    d.rounded_rectangle(
        scaled([(0.46, 0.12), (0.54, 0.2)], s),
        radius=s * 0.03,
        outline=shade(colour, 0.5),
        width=int(s * 0.012),
    )
    d.rectangle(scaled([(0.47, 0.33), (0.53, 0.42)], s), fill=(40, 40, 40))
    return image


def product_beanie(colour):
    image, s = studio(5, (242, 236, 230), (222, 210, 200))
    d = ImageDraw.Draw(image)
    d.pieslice(scaled([(0.26, 0.3), (0.74, 0.94)], s), 180, 360, fill=colour)
    d.rounded_rectangle(
        scaled([(0.24, 0.56), (0.76, 0.74)], s), radius=s * 0.02, fill=shade(colour, 0.82)
    )
    for i in range(13):
        x = 0.27 + i * 0.038
        d.line(scaled([(x, 0.57), (x, 0.73)], s), fill=shade(colour, 0.65), width=int(s * 0.006))
    d.ellipse(scaled([(0.43, 0.2), (0.57, 0.34)], s), fill=CREAM)
    return image


def product_flask(colour):
    image, s = studio(6, (232, 236, 240), (205, 212, 220))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle(scaled([(0.38, 0.24), (0.62, 0.84)], s), radius=s * 0.06, fill=colour)
    d.rounded_rectangle(scaled([(0.41, 0.14), (0.59, 0.26)], s), radius=s * 0.03, fill=(52, 52, 52))
    d.rectangle(scaled([(0.38, 0.46), (0.62, 0.6)], s), fill=CREAM)
    mark(d, 0.455 * s, 0.48 * s, 0.09 * s, FOREST, RUST)
    d.rectangle(scaled([(0.56, 0.26), (0.59, 0.82)], s), fill=shade(colour, 1.25))
    return image


def product_mug(colour):
    image, s = studio(7, (240, 236, 228), (220, 212, 198))
    d = ImageDraw.Draw(image)
    d.ellipse(scaled([(0.58, 0.42), (0.8, 0.66)], s), outline=colour, width=int(s * 0.045))
    d.rounded_rectangle(scaled([(0.26, 0.36), (0.66, 0.82)], s), radius=s * 0.03, fill=colour)
    d.ellipse(scaled([(0.26, 0.32), (0.66, 0.4)], s), fill=shade(colour, 0.75))
    d.ellipse(scaled([(0.28, 0.33), (0.64, 0.39)], s), fill=(70, 50, 40))
    d.line(scaled([(0.26, 0.36), (0.66, 0.36)], s), fill=(30, 30, 30), width=int(s * 0.006))
    for i in range(9):  # speckled enamel
        x = 0.3 + (i * 0.137) % 0.32
        y = 0.44 + (i * 0.091) % 0.34
        d.ellipse(scaled([(x, y), (x + 0.012, y + 0.012)], s), fill=shade(colour, 1.5))
    return image


def product_tent(colour):
    image, s = studio(8, (234, 238, 230), (208, 216, 200))
    d = ImageDraw.Draw(image)
    d.polygon(scaled([(0.5, 0.26), (0.86, 0.8), (0.14, 0.8)], s), fill=colour)
    d.polygon(scaled([(0.5, 0.26), (0.86, 0.8), (0.62, 0.8)], s), fill=shade(colour, 0.78))
    d.polygon(scaled([(0.5, 0.44), (0.6, 0.8), (0.4, 0.8)], s), fill=shade(colour, 0.4))
    d.line(scaled([(0.5, 0.22), (0.5, 0.28)], s), fill=(60, 60, 60), width=int(s * 0.01))
    d.line(scaled([(0.14, 0.8), (0.06, 0.84)], s), fill=(120, 110, 100), width=int(s * 0.004))
    d.line(scaled([(0.86, 0.8), (0.94, 0.84)], s), fill=(120, 110, 100), width=int(s * 0.004))
    return image


PRODUCTS = {
    "product-parka.jpg": (product_parka, RUST),
    "product-fleece.jpg": (product_fleece, (58, 92, 120)),
    "product-boots.jpg": (product_boots, (120, 78, 48)),
    "product-backpack.jpg": (product_backpack, FOREST),
    "product-beanie.jpg": (product_beanie, (196, 150, 58)),
    "product-flask.jpg": (product_flask, (96, 130, 140)),
    "product-mug.jpg": (product_mug, (34, 60, 92)),
    "product-tent.jpg": (product_tent, (214, 120, 50)),
}


# ---------------------------------------------------------------------------------------
# Heroes and stories


def hero_black_friday():
    w, h = 1200, 720
    image = gradient((w * SS, h * SS), (18, 18, 18), (38, 34, 30))
    d = ImageDraw.Draw(image)
    W, H = w * SS, h * SS
    rng = random.Random(11)
    for _ in range(70):  # snow-like specks
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(1, 4) * SS
        d.ellipse([x - r, y - r, x + r, y + r], fill=(70, 66, 60))
    d.polygon(ridge(rng, W, H * 1.02, H * 0.3, H * 0.02), fill=(44, 42, 38))
    d.polygon(ridge(rng, W, H * 1.08, H * 0.24, H * 0.02), fill=(56, 52, 46))
    big = font("DejaVuSans-Bold.ttf", 176 * SS)
    small = font("DejaVuSans-Bold.ttf", 40 * SS)
    spaced_text(d, (W / 2, H * 0.12), "BLACK FRIDAY", small, GOLD, spacing=14 * SS, anchor="ma")
    d.text((W / 2, H * 0.22), "30% OFF", font=big, fill=WHITE, anchor="ma")
    spaced_text(
        d,
        (W / 2, H * 0.5),
        "EVERYTHING · ONLINE & IN STORE",
        small,
        WHITE,
        spacing=6 * SS,
        anchor="ma",
    )
    d.rectangle([W * 0.42, H * 0.62, W * 0.58, H * 0.625], fill=GOLD)
    spaced_text(
        d,
        (W / 2, H * 0.67),
        "FRIDAY 28 – MONDAY 1 DEC",
        font("DejaVuSans.ttf", 30 * SS),
        (200, 196, 188),
        spacing=5 * SS,
        anchor="ma",
    )
    save_jpeg(finish(image, (w, h)), "hero-black-friday.jpg")


def hero_editorial():
    image = landscape(
        (1200, 760),
        21,
        ((238, 205, 170), (250, 232, 208)),
        [(196, 160, 140), (150, 120, 110), (96, 84, 78), (52, 58, 52)],
        sun=(0.7, 0.42, 0.05, (255, 236, 200)),
        trees=26,
    )
    save_jpeg(finish(image, (1200, 760)), "hero-editorial.jpg")


def hero_newsletter():
    image = landscape(
        (1200, 640),
        31,
        ((196, 212, 218), (232, 226, 210)),
        [(170, 180, 176), (140, 126, 96), (176, 96, 52), (88, 60, 38)],
        sun=(0.25, 0.3, 0.04, (255, 246, 226)),
        trees=34,
    )
    save_jpeg(finish(image, (1200, 640)), "hero-newsletter.jpg")


TITLE = "Welcome to the trail"


def hero_welcome():
    w, h = 1200, 700
    image = landscape(
        (w, h),
        41,
        ((248, 214, 170), (253, 240, 220)),
        [(214, 170, 150), (160, 130, 130), (74, 104, 90), (31, 77, 58)],
        sun=(0.5, 0.5, 0.06, (255, 244, 214)),
        trees=30,
    )
    f = font("DejaVuSerif-Bold.ttf", 84 * SS)
    at = (w * SS / 2, h * SS * 0.14)
    shadow = Image.new("L", image.size, 0)
    ImageDraw.Draw(shadow).text((at[0], at[1] + 2 * SS), TITLE, font=f, fill=150, anchor="ma")
    shadow = shadow.filter(ImageFilter.GaussianBlur(6 * SS))
    image = Image.composite(Image.new("RGB", image.size, (110, 70, 50)), image, shadow)
    ImageDraw.Draw(image).text(at, TITLE, font=f, fill=WHITE, anchor="ma")
    save_jpeg(finish(image, (w, h)), "hero-welcome.jpg")


def stories():
    for name, seed, sky, layers, sun in (
        (
            "story-repair.jpg",
            51,
            ((210, 196, 176), (236, 228, 214)),
            [(150, 140, 120), (110, 96, 76), (70, 60, 48)],
            (0.8, 0.3, 0.05, (250, 240, 220)),
        ),
        (
            "story-trail.jpg",
            61,
            ((176, 200, 214), (226, 232, 230)),
            [(150, 170, 170), (96, 120, 108), (40, 70, 56)],
            (0.2, 0.32, 0.05, (255, 250, 236)),
        ),
        (
            "story-night.jpg",
            71,
            ((24, 32, 60), (70, 70, 104)),
            [(60, 60, 90), (40, 44, 66), (20, 24, 36)],
            (0.75, 0.25, 0.04, (240, 236, 210)),
        ),
    ):
        image = landscape((560, 400), seed, sky, layers, sun=sun, trees=18)
        if name == "story-night.jpg":
            d = ImageDraw.Draw(image)
            rng = random.Random(seed)
            for _ in range(90):
                x, y = rng.uniform(0, 560 * SS), rng.uniform(0, 200 * SS)
                d.ellipse([x, y, x + 2 * SS, y + 2 * SS], fill=(230, 230, 240))
            # a lit tent in the foreground
            d.polygon(
                [(300 * SS, 300 * SS), (360 * SS, 390 * SS), (240 * SS, 390 * SS)],
                fill=(236, 170, 80),
            )
            d.polygon(
                [(300 * SS, 330 * SS), (318 * SS, 390 * SS), (282 * SS, 390 * SS)],
                fill=(255, 226, 150),
            )
        save_jpeg(finish(image, (560, 400)), name)


# ---------------------------------------------------------------------------------------
# Flat illustrations


def feature_icons():
    """Delivery, returns and repairs: 96 px line icons on a cream disc."""
    for name in ("delivery", "returns", "repair"):
        s = 96 * SS * 2
        image = Image.new("RGBA", (s, s), (0, 0, 0, 0))
        d = ImageDraw.Draw(image)
        d.ellipse([0, 0, s - 1, s - 1], fill=SAND)
        lw = int(s * 0.045)
        if name == "delivery":
            d.rectangle(scaled([(0.2, 0.34), (0.58, 0.62)], s), outline=FOREST, width=lw)
            d.line(
                scaled([(0.58, 0.42), (0.7, 0.42), (0.8, 0.52), (0.8, 0.62), (0.58, 0.62)], s),
                fill=FOREST,
                width=lw,
                joint="curve",
            )
            for cx in (0.32, 0.7):
                d.ellipse(
                    scaled([(cx - 0.06, 0.58), (cx + 0.06, 0.7)], s),
                    fill=SAND,
                    outline=FOREST,
                    width=lw,
                )
        elif name == "returns":
            d.arc(scaled([(0.24, 0.24), (0.76, 0.76)], s), 30, 320, fill=FOREST, width=lw)
            d.polygon(scaled([(0.7, 0.22), (0.76, 0.4), (0.58, 0.36)], s), fill=FOREST)
        else:
            d.line(scaled([(0.3, 0.7), (0.62, 0.38)], s), fill=FOREST, width=int(lw * 1.4))
            d.ellipse(scaled([(0.56, 0.22), (0.8, 0.46)], s), outline=FOREST, width=lw)
            d.rectangle(scaled([(0.66, 0.2), (0.72, 0.34)], s), fill=SAND)
        save_png(finish(image, (96, 96)), f"icon-{name}.png", colours=16)


def plus_parcel():
    """Trial ending: a parcel with the Plus badge, on sand."""
    w, h = 560, 400
    W, H = w * SS, h * SS
    image = Image.new("RGB", (W, H), SAND)
    d = ImageDraw.Draw(image)
    d.ellipse([W * 0.22, H * 0.8, W * 0.78, H * 0.9], fill=shade(SAND, 0.88))
    box = (190, 140, 96)
    d.polygon(
        [(W * 0.28, H * 0.36), (W * 0.5, H * 0.46), (W * 0.5, H * 0.86), (W * 0.28, H * 0.76)],
        fill=box,
    )
    d.polygon(
        [(W * 0.5, H * 0.46), (W * 0.72, H * 0.36), (W * 0.72, H * 0.76), (W * 0.5, H * 0.86)],
        fill=shade(box, 0.82),
    )
    d.polygon(
        [(W * 0.28, H * 0.36), (W * 0.5, H * 0.26), (W * 0.72, H * 0.36), (W * 0.5, H * 0.46)],
        fill=shade(box, 1.15),
    )
    d.polygon(
        [(W * 0.37, H * 0.32), (W * 0.43, H * 0.29), (W * 0.65, H * 0.39), (W * 0.59, H * 0.42)],
        fill=(232, 214, 180),
    )
    cx, cy, r = W * 0.7, H * 0.28, W * 0.11
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=FOREST)
    d.text(
        (cx, cy - r * 0.18),
        "+",
        font=font("DejaVuSans-Bold.ttf", int(r * 1.1)),
        fill=GOLD,
        anchor="mm",
    )
    d.text(
        (cx, cy + r * 0.5),
        "PLUS",
        font=font("DejaVuSans-Bold.ttf", int(r * 0.36)),
        fill=WHITE,
        anchor="mm",
    )
    save_png(finish(image, (w, h)), "illustration-plus.png", colours=48)


def team():
    """Invite your team: three hikers at a summit marker."""
    w, h = 1200, 560
    W, H = w * SS, h * SS
    image = landscape(
        (w, h),
        81,
        ((206, 226, 222), (240, 236, 224)),
        [(180, 200, 196), (130, 160, 150), (82, 120, 100)],
        trees=0,
        haze=False,
    )
    d = ImageDraw.Draw(image)
    d.polygon(
        [(0, H * 0.86), (W * 0.3, H * 0.72), (W * 0.7, H * 0.7), (W, H * 0.84), (W, H), (0, H)],
        fill=FOREST,
    )
    for i, (x, colour, scale_) in enumerate(
        ((0.38, RUST, 1.0), (0.5, GOLD, 1.12), (0.62, (58, 92, 120), 0.96))
    ):
        base = H * 0.72
        hgt = H * 0.34 * scale_
        cx = W * x
        d.rounded_rectangle(
            [cx - hgt * 0.17, base - hgt * 0.72, cx + hgt * 0.17, base],
            radius=hgt * 0.12,
            fill=colour,
        )
        d.ellipse(
            [cx - hgt * 0.12, base - hgt * 1.0, cx + hgt * 0.12, base - hgt * 0.76],
            fill=(90, 62, 48) if i != 1 else (224, 180, 150),
        )
        d.rectangle(
            [cx - hgt * 0.24, base - hgt * 0.62, cx - hgt * 0.14, base - hgt * 0.28],
            fill=shade(colour, 0.7),
        )
    d.line([(W * 0.5, H * 0.72), (W * 0.5, H * 0.2)], fill=CHARCOAL, width=4 * SS)
    d.polygon([(W * 0.5, H * 0.2), (W * 0.58, H * 0.24), (W * 0.5, H * 0.28)], fill=RUST)
    save_jpeg(finish(image, (w, h)), "hero-team.jpg")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    logo(FOREST, RUST, "logo.png")
    logo(WHITE, GOLD, "logo-white.png")
    social_icons()
    for name, (draw, colour) in PRODUCTS.items():
        save_jpeg(finish(draw(colour), (480, 480)), name)
    hero_black_friday()
    hero_editorial()
    hero_newsletter()
    hero_welcome()
    stories()
    feature_icons()
    plus_parcel()
    team()
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(list(OUT.iterdir()))} images, {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()

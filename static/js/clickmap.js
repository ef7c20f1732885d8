/* The click map's numbers, cards and small behaviours (no inline scripts: CSP).
 *
 * Badges. Each link drawn on the preview gets one badge with its number. Badges are laid
 * out in rank order (the server lists them so), each at the first free spot:
 *   1. inside one of its own boxes (largest first, top-right corner first) when it fits;
 *   2. else the free spot nearest to its largest box, found among positions beside the
 *      boxes and badges around it (off its own boxes too, when it can), with a thin
 *      leader line to the box.
 * A spot is free when it overlaps no other link's box and no badge placed before, and
 * lies inside the picture. The layout depends only on the boxes, the badges' sizes and
 * the picture's displayed size, so it is the same every time; it is redone when that
 * size changes.
 */
(function () {
  "use strict";

  const GAP = 2; // px between a badge and what it must not touch
  const INSET = 2; // px between a badge and the edge of the box it sits in

  function rectOf(el, frame) {
    const r = el.getBoundingClientRect();
    const f = frame.getBoundingClientRect();
    return { x: r.left - f.left, y: r.top - f.top, w: r.width, h: r.height };
  }

  function hits(a, b, gap) {
    return a.x < b.x + b.w + gap && b.x < a.x + a.w + gap &&
      a.y < b.y + b.h + gap && b.y < a.y + a.h + gap;
  }

  // Distance between two rectangles (0 when they touch or overlap).
  function distance(a, b) {
    const dx = Math.max(0, b.x - (a.x + a.w), a.x - (b.x + b.w));
    const dy = Math.max(0, b.y - (a.y + a.h), a.y - (b.y + b.h));
    return Math.hypot(dx, dy);
  }

  function layout(frame) {
    const started = performance.now();
    const width = frame.clientWidth, height = frame.clientHeight;
    if (!width || !height) return;
    const boxes = Array.from(frame.querySelectorAll(".box")).map(function (el) {
      return Object.assign(rectOf(el, frame), { link: el.dataset.link });
    });
    const placed = [];
    const svg = frame.querySelector("svg.leaders");
    const lines = [];
    for (const badge of frame.querySelectorAll(".num-badge")) {
      const link = badge.dataset.link;
      const w = badge.offsetWidth, h = badge.offsetHeight;
      const own = boxes.filter(function (b) { return b.link === link; });
      const others = boxes.filter(function (b) { return b.link !== link; });
      const free = function (c) {
        if (c.x < 0 || c.y < 0 || c.x + c.w > width || c.y + c.h > height) return false;
        for (const o of others) if (hits(c, o, GAP)) return false;
        for (const p of placed) if (hits(c, p, GAP)) return false;
        return true;
      };
      let spot = null;
      const bySize = own.slice().sort(function (a, b) { return b.w * b.h - a.w * a.h; });
      for (const b of bySize) {
        if (w + 2 * INSET > b.w || h + 2 * INSET > b.h) continue;
        const corners = [
          [b.x + b.w - w - INSET, b.y + INSET], [b.x + INSET, b.y + INSET],
          [b.x + b.w - w - INSET, b.y + b.h - h - INSET], [b.x + INSET, b.y + b.h - h - INSET],
          [b.x + (b.w - w) / 2, b.y + (b.h - h) / 2],
        ];
        for (const [x, y] of corners) {
          const c = { x: x, y: y, w: w, h: h };
          if (free(c)) { spot = c; break; }
        }
        if (spot) break;
      }
      const anchor = bySize[0];
      // Outside its boxes, a badge keeps off its own link's text as well when it can.
      const clear = function (c) {
        return free(c) && !own.some(function (b) { return hits(c, b, GAP); });
      };
      if (!spot && anchor) {
        spot = nearestFree(anchor, w, h, others.concat(own), placed, width, height, clear) ||
          nearestFree(anchor, w, h, others, placed, width, height, free);
      }
      if (!spot) continue; // nowhere free: the number stays in the list and the card
      badge.style.left = (100 * spot.x / width) + "%";
      badge.style.top = (100 * spot.y / height) + "%";
      badge.classList.add("placed");
      placed.push(spot);
      if (anchor && !own.some(function (b) { return inside(spot, b); })) {
        lines.push(leader(spot, anchor, badge.dataset.band));
      }
    }
    if (svg) {
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      svg.innerHTML = lines.join("");
    }
    frame.classList.add("laid-out");
    frame.dataset.layoutMs = (performance.now() - started).toFixed(2); // read by bench/
  }

  function inside(a, b) {
    return a.x >= b.x && a.y >= b.y && a.x + a.w <= b.x + b.w && a.y + a.h <= b.y + b.h;
  }

  // Candidate positions beside the anchor and beside every box or badge near it, nearest
  // first; then, if none is free, every position of a grid over the picture.
  function nearestFree(anchor, w, h, others, placed, width, height, free) {
    const near = function (radius) {
      return others.concat(placed).filter(function (o) { return distance(o, anchor) <= radius; });
    };
    for (const radius of [120, 400]) {
      const around = near(radius).concat([anchor]);
      const xs = new Set([anchor.x + anchor.w - w, anchor.x, anchor.x + (anchor.w - w) / 2]);
      const ys = new Set([anchor.y, anchor.y + anchor.h - h, anchor.y + (anchor.h - h) / 2]);
      for (const o of around) {
        xs.add(o.x + o.w + GAP + 0.5); xs.add(o.x - w - GAP - 0.5);
        ys.add(o.y + o.h + GAP + 0.5); ys.add(o.y - h - GAP - 0.5);
      }
      const found = best(Array.from(xs), Array.from(ys), anchor, w, h, width, height, free);
      if (found) return found;
    }
    const xs = [], ys = [];
    for (let x = 0; x + w <= width; x += Math.max(4, w / 2)) xs.push(x);
    for (let y = 0; y + h <= height; y += Math.max(4, h / 2)) ys.push(y);
    return best(xs, ys, anchor, w, h, width, height, free);
  }

  function best(xs, ys, anchor, w, h, width, height, free) {
    const candidates = [];
    for (const x0 of xs) {
      const x = Math.min(Math.max(0, x0), width - w);
      for (const y0 of ys) {
        const y = Math.min(Math.max(0, y0), height - h);
        const c = { x: x, y: y, w: w, h: h };
        candidates.push([distance(c, anchor), y, x, c]);
      }
    }
    candidates.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1] || a[2] - b[2]; });
    for (const [, , , c] of candidates) if (free(c)) return c;
    return null;
  }

  // A line from the badge's nearest edge point to the nearest point of its box.
  function leader(badge, box, band) {
    const cx = badge.x + badge.w / 2, cy = badge.y + badge.h / 2;
    const tx = Math.min(Math.max(cx, box.x), box.x + box.w);
    const ty = Math.min(Math.max(cy, box.y), box.y + box.h);
    const sx = Math.min(Math.max(tx, badge.x), badge.x + badge.w);
    const sy = Math.min(Math.max(ty, badge.y), badge.y + badge.h);
    return '<line class="band-' + band + '" x1="' + sx.toFixed(1) + '" y1="' + sy.toFixed(1) +
      '" x2="' + tx.toFixed(1) + '" y2="' + ty.toFixed(1) + '"/>';
  }

  // The card: one per map, filled from the link's <template> on hover, focus or Locate.
  function showCard(frame, link, target, pinned) {
    const source = frame.querySelector('template[data-card="' + link + '"]');
    let card = frame.querySelector(".box-card");
    if (!source || !card) return;
    card.replaceChildren(source.content.cloneNode(true));
    const r = rectOf(target, frame);
    card.hidden = false;
    card.classList.toggle("pinned", !!pinned);
    const left = Math.min(r.x, frame.clientWidth - card.offsetWidth - 4);
    let top = r.y + r.h + 6;
    if (top + card.offsetHeight > frame.clientHeight && r.y > card.offsetHeight + 6) {
      top = r.y - card.offsetHeight - 6;
    }
    card.style.left = Math.max(0, left) + "px";
    card.style.top = top + "px";
  }

  function hideCard(frame, evenPinned) {
    const card = frame && frame.querySelector(".box-card");
    if (card && (evenPinned || !card.classList.contains("pinned"))) card.hidden = true;
  }

  function closeAllCards() {
    for (const frame of document.querySelectorAll(".preview-frame")) hideCard(frame, true);
  }

  function init(root) {
    for (const frame of root.querySelectorAll(".preview-frame")) {
      if (frame.dataset.watched) { layout(frame); continue; }
      frame.dataset.watched = "1";
      layout(frame);
      const image = frame.querySelector("img");
      if (image && !image.complete) image.addEventListener("load", function () { layout(frame); });
      if (window.ResizeObserver) {
        let last = frame.clientWidth;
        new ResizeObserver(function () {
          if (frame.clientWidth !== last) { last = frame.clientWidth; layout(frame); }
        }).observe(frame);
      }
    }
  }

  // Dates: typing a date must not reload the map at each keystroke (each one makes a
  // valid date while the year is typed: 0002, 0020, 0202, 2026). A date's change reaches
  // the form once it is left, Enter is pressed, or typing has paused with a full year.
  const SETTLE_MS = 1200;
  document.addEventListener("change", function (event) {
    const input = event.target;
    if (input.matches && input.matches("input[type=date]") && !input.dataset.settled) {
      event.stopPropagation();
      input.dataset.pending = "1";
      clearTimeout(input.settleTimer);
      input.settleTimer = setTimeout(function () {
        if (/^(19|20)[0-9]{2}-/.test(input.value) || input.value === "") settle(input);
      }, SETTLE_MS);
    }
  }, true);
  function settle(input) {
    clearTimeout(input.settleTimer);
    if (!input.dataset.pending) return;
    delete input.dataset.pending;
    input.dataset.settled = "1";
    input.dispatchEvent(new Event("change", { bubbles: true }));
    delete input.dataset.settled;
  }
  document.addEventListener("focusout", function (event) {
    if (event.target.matches && event.target.matches("input[type=date]")) settle(event.target);
  });
  document.addEventListener("keydown", function (event) {
    const input = event.target;
    if (event.key === "Enter" && input.matches && input.matches("input[type=date]")) {
      event.preventDefault();
      settle(input);
    }
    if (event.key === "Escape") closeAllCards();
  });

  document.addEventListener("mouseover", function (event) {
    const target = event.target.closest && event.target.closest(".box, .num-badge");
    if (!target) return;
    const frame = target.closest(".preview-frame");
    const card = frame && frame.querySelector(".box-card");
    if (card && card.classList.contains("pinned") && !card.hidden) return;
    showCard(frame, target.dataset.link, target, false);
  });
  document.addEventListener("mouseout", function (event) {
    const target = event.target.closest && event.target.closest(".box, .num-badge");
    if (target) hideCard(target.closest(".preview-frame"), false);
  });
  document.addEventListener("focusin", function (event) {
    const target = event.target.closest && event.target.closest(".box, .num-badge");
    if (target) showCard(target.closest(".preview-frame"), target.dataset.link, target, false);
  });

  document.addEventListener("click", function (event) {
    const close = event.target.closest && event.target.closest(".card-close");
    if (close) { event.preventDefault(); closeAllCards(); return; }
    const locate = event.target.closest && event.target.closest("a.locate");
    if (locate) {
      const box = document.getElementById(locate.getAttribute("href").slice(1));
      if (!box) return;
      event.preventDefault();
      closeAllCards();
      location.hash = locate.getAttribute("href"); // the box is the :target
      box.scrollIntoView({ block: "center" });
      for (const old of document.querySelectorAll(".box.located")) old.classList.remove("located");
      for (const b of box.closest(".preview-frame").querySelectorAll('.box[data-link="' + box.dataset.link + '"]')) {
        b.classList.add("located");
      }
      showCard(box.closest(".preview-frame"), box.dataset.link, box, true);
      return;
    }
    if (!(event.target.closest && event.target.closest(".box-card"))) closeAllCards();
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSettle", function (event) { init(event.target); });
  if (document.readyState !== "loading") init(document);
})();

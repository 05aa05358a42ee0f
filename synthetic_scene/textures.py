"""Procedural, non-repeating textures fixed in world coordinates, sampled with trilinear mip-
mapping."""

import functools

import cv2
import numpy as np

from synthetic_scene.constants import GROUND_TEX_X0


def _periodic_upsample(grid, factor):
    """Cubic upsampling of a periodic [h,w] grid by an integer factor; the result stays periodic."""
    gh, gw = grid.shape
    pad = np.pad(grid, 2, mode="wrap")
    up = cv2.resize(pad, ((gw + 4) * factor, (gh + 4) * factor), interpolation=cv2.INTER_CUBIC)
    return up[2 * factor:(gh + 2) * factor, 2 * factor:(gw + 2) * factor]


def _fbm(rng, h, w, cells, exponent=0.5):
    """[h,w] float32 multi-octave value noise, periodic, zero mean, unit std.

    Octaves have feature sizes ``cells`` (powers of two, in texels) and amplitudes ∝
    cell^exponent. Built coarse to fine (upsample ×2, add the next octave), so the cost is a few
    passes over the output whatever the number of octaves.
    """
    cells = sorted(cells, reverse=True)
    cell = cells[0]
    grid = rng.standard_normal((max(h // cell, 1), max(w // cell, 1)), dtype=np.float32)
    grid *= np.float32(cell ** exponent)
    while cell > cells[-1]:
        grid = _periodic_upsample(grid, 2)
        cell //= 2
        if cell in cells:
            grid += rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(cell ** exponent)
    if cell > 1:
        grid = _periodic_upsample(grid, cell)
    grid = grid[:h, :w]
    return (grid - grid.mean()) / max(float(grid.std()), 1e-6)


def _cell_values(rng, ix, iy, lo, hi):
    """Per-cell random values for integer cell indices (periodic table of 257×263 entries)."""
    table = rng.uniform(lo, hi, size=(257, 263)).astype(np.float32)
    return table[np.mod(iy, 257), np.mod(ix, 263)]


def _coords(h, w, texel):
    """Texel-centre coordinates in metres: rows [h,1], cols [1,w]."""
    return ((np.arange(h, dtype=np.float32) + 0.5) * texel)[:, None], \
        ((np.arange(w, dtype=np.float32) + 0.5) * texel)[None, :]


def _colourise(gray, classes, colours):
    """[h,w,3] float32: gray × the colour of each texel's class (colours [C,3], C ≤ 256)."""
    lut = np.zeros((256, 1, 3), np.float32)
    lut[:len(colours), 0] = colours
    cls = np.ascontiguousarray(np.broadcast_to(classes, gray.shape), dtype=np.uint8)
    return cv2.LUT(cv2.merge([cls, cls, cls]), lut) * gray[..., None]


def _tex_ground(rng, texel=0.025, h=4096, w=1024):
    """Road plane: rows = z + ground_offset[1] (102.4 m period), cols = x + ground_offset[0]
    (25.6 m period: road |x| < 5.5, kerb to 5.7, paving tiles beyond)."""
    z, xs = _coords(h, w, texel)
    x = xs - GROUND_TEX_X0
    ax = np.abs(x)
    fine = _fbm(rng, h, w, [1, 2, 4, 8], 0.3)
    coarse = _fbm(rng, h, w, [32, 64, 128, 256, 512], 0.6)
    speck = rng.random((h, w), dtype=np.float32)
    speck = np.where(speck < 0.02, (speck - 0.01) * 12.0, 0.0).astype(np.float32)
    asphalt = 0.30 + 0.045 * fine + 0.05 * coarse + speck
    tiles_b = _cell_values(rng, np.floor(xs / 0.4).astype(np.int64),
                           np.floor(z / 0.4).astype(np.int64), 0.82, 1.18)
    grout = (np.mod(xs, 0.4) < texel) | (np.mod(z, 0.4) < texel)
    sidewalk = 0.55 * tiles_b * (1.0 + 0.07 * fine + 0.06 * coarse)
    sidewalk = np.where(grout, 0.62 * sidewalk, sidewalk)
    kerb = 0.68 * (1.0 + 0.06 * fine)
    edge_line = (ax >= 5.1) & (ax < 5.25)
    centre_dash = (np.abs(x + 1.75) < 0.075) & (np.mod(z, 10.24) < 3.2)
    road = np.where(edge_line | centre_dash, 0.82 * (0.9 + 0.08 * coarse), asphalt)
    is_road = np.broadcast_to(ax < 5.5, (h, w))
    gray = np.where(is_road, road, np.where(ax < 5.7, kerb, sidewalk))
    return _colourise(gray, (~is_road).astype(np.int64), [[0.95, 0.97, 1.0], [1.0, 0.95, 0.88]])


def _windows(a, hgt, period, x0, x1, y0, y1, min_height=3.2):
    """Masks (glass, frame) of a window grid: windows [x0,x1)×[y0,y1) in each period×period cell
    at heights ≥ min_height, with 8 cm frames."""
    ca, ch = np.mod(a, period), np.mod(hgt, period)
    inside = (ca >= x0) & (ca < x1) & (ch >= y0) & (ch < y1) & (hgt >= min_height)
    frame_w = 0.08
    inner = (ca >= x0 + frame_w) & (ca < x1 - frame_w) & (ch >= y0 + frame_w) & (ch < y1 - frame_w)
    return inside & inner, inside & ~inner


# facade texel classes and their colours per facade kind: wall, mortar/joint, cornice, frame, glass
_FACADE_COLOURS = {
    "brick": [[0.66, 0.38, 0.29], [0.9, 0.88, 0.84], [0.92, 0.9, 0.86], [0.95, 0.95, 0.93],
              [0.8, 0.9, 1.05]],
    "plaster": [[1.0, 0.95, 0.86], [1.0, 0.95, 0.86], [0.92, 0.9, 0.86], [0.95, 0.95, 0.93],
                [0.8, 0.9, 1.05]],
    "panel": [[0.95, 0.96, 1.0], [0.95, 0.96, 1.0], [0.92, 0.9, 0.86], [0.9, 0.92, 0.95],
              [0.8, 0.9, 1.05]],
}


def _tex_facade(rng, kind, texel=0.025, h=1024, w=2048):
    """Facades: rows = height above the road (25.6 m), cols = distance along the facade (51.2 m);
    windows on a 3.2 m grid (shop windows on the ground floor)."""
    hgt, a = _coords(h, w, texel)
    fine = _fbm(rng, h, w, [1, 2, 4, 8], 0.3)
    coarse = _fbm(rng, h, w, [32, 64, 128, 256], 0.6)
    per_window = _cell_values(rng, np.floor(a / 3.2).astype(np.int64),
                              np.floor(hgt / 3.2).astype(np.int64), 0.6, 1.5)
    glass = 0.17 * per_window * (1.0 + 0.35 * _fbm(rng, h, w, [16, 32, 64, 128], 0.7))
    ground_floor = hgt < 3.2
    if kind == "brick":
        row = np.floor(hgt / 0.1).astype(np.int64)
        shifted = a + 0.125 * np.mod(row, 2)
        brick_b = _cell_values(rng, np.floor(shifted / 0.25).astype(np.int64), row, 0.78, 1.22)
        joint = (np.mod(hgt, 0.1) < texel) | (np.mod(shifted, 0.25) < texel)
        wall = np.where(joint, 0.75 * (1 + 0.05 * fine), brick_b * (1 + 0.1 * fine + 0.08 * coarse))
        pane, frame = _windows(a, hgt, 3.2, 0.95, 2.25, 0.9, 2.5)
        shop, shop_frame = _windows(a, hgt, 3.2, 0.3, 2.9, 0.4, 2.7, min_height=0.0)
        cornice = (np.mod(hgt, 3.2) < 0.18) & (hgt > 1.0)
    elif kind == "plaster":
        joint = np.zeros((h, w), bool)
        wall = 0.8 * (1 + 0.05 * fine + 0.12 * coarse)
        pane, frame = _windows(a, hgt, 3.2, 1.1, 2.1, 0.8, 2.7)
        shop, shop_frame = _windows(a, hgt, 3.2, 0.5, 2.7, 0.3, 2.5, min_height=0.0)
        cornice = (np.mod(hgt, 3.2) < 0.25) & (hgt > 1.0)
    else:  # concrete panels with ribbon windows
        panel_b = _cell_values(rng, np.floor(a / 1.6).astype(np.int64),
                               np.floor(hgt / 1.6).astype(np.int64), 0.85, 1.15)
        joint = (np.mod(a, 1.6) < texel) | (np.mod(hgt, 1.6) < texel)
        wall = 0.62 * panel_b * (1 + 0.06 * fine + 0.08 * coarse)
        wall = np.where(joint, 0.55 * wall, wall)
        ch = np.mod(hgt, 3.2)
        mullion = np.mod(a, 1.6) < 0.07
        band = (ch >= 1.0) & (ch < 2.3) & (hgt > 3.0)
        pane, frame = band & ~mullion, band & mullion
        shop_band = (hgt >= 0.3) & (hgt < 2.6)
        shop, shop_frame = shop_band & ~mullion, shop_band & mullion
        cornice = np.zeros((h, w), bool)
    shop &= ground_floor
    shop_frame &= ground_floor
    classes = np.where(joint, 1, 0)
    gray = np.where(cornice, 0.78 * (1 + 0.05 * fine), wall)
    classes = np.where(cornice, 2, classes)
    is_frame = frame | shop_frame
    gray = np.where(is_frame, 0.85 * (1 + 0.04 * fine), gray)
    classes = np.where(is_frame, 3, classes)
    is_glass = pane | shop
    gray = np.where(is_glass, glass, gray)
    classes = np.where(is_glass, 4, classes)
    return _colourise(gray, classes, _FACADE_COLOURS[kind])


def _tex_simple(rng, base, colour, texel, size, line_period=None):
    """Square texture of a nearly uniform material (car paint, glass, metal)."""
    hgt, a = _coords(size, size, texel)
    gray = base * (1.0 + 0.06 * _fbm(rng, size, size, [1, 2, 4], 0.3)
                   + 0.1 * _fbm(rng, size, size, [16, 32, 64], 0.6))
    if line_period is not None:
        gray = np.where(np.mod(a, line_period) < 0.015, 0.6 * gray, gray)
    return _colourise(gray, np.zeros((size, size), np.int64), [colour])


def _tex_backdrop(rng, texel=0.1, h=512, w=4096):
    """Far walls: rows = height (51.2 m), cols = distance along the wall (409.6 m): blocks of
    distant buildings with window dots."""
    hgt, a = _coords(h, w, texel)
    edges = np.cumsum(rng.uniform(4.0, 16.0, size=64))
    block = np.searchsorted(edges, np.mod(a[0], edges[-1]))
    block_b = rng.uniform(0.35, 0.8, size=65).astype(np.float32)[block][None, :]
    dots = (np.mod(a, 1.6) < 0.7) & (np.mod(hgt, 1.8) < 0.9) & (hgt > 1.5)
    gray = block_b * (1.0 + 0.08 * _fbm(rng, h, w, [1, 2, 4], 0.3)
                      + 0.12 * _fbm(rng, h, w, [16, 64, 256], 0.6))
    gray = np.where(dots, 0.65 * gray, gray)
    colours = rng.uniform(0.85, 1.15, size=(65, 3))
    return _colourise(gray, np.broadcast_to(block[None, :], (h, w)), colours)


def _tex_sky(rng, h=256, w=2048):
    """Sky by direction: rows = elevation 0..90°, cols = azimuth −180..180°."""
    el = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    horizon = np.float32([0.86, 0.9, 0.94])
    zenith = np.float32([0.45, 0.62, 0.9])
    base = horizon + (zenith - horizon) * np.sqrt(el)[..., None]
    clouds = np.clip(_fbm(rng, h, w, [8, 16, 32, 64, 128], 0.8) - 0.3, 0.0, None)
    clouds = (clouds / max(float(clouds.max()), 1e-6))[..., None]
    return base * (1 - 0.6 * clouds) + 0.97 * 0.6 * clouds


class _MipAtlas:
    """A texture's mip pyramid packed into one uint8 image for ``cv2.remap``.

    Level 0 sits at (0, 0), levels 1.. are stacked in a column to its right. Each level is padded
    with one wrapped row and column, so a bilinear lookup at any coordinate in [0, w_l) × [0, h_l)
    of level l stays inside it and wraps seamlessly. ``texel`` is in metres (level 0).
    """

    def __init__(self, rgb, texel):
        levels = [np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)]
        while min(levels[-1].shape[:2]) > 4:
            top = levels[-1]
            levels.append(cv2.resize(top, (top.shape[1] // 2, top.shape[0] // 2),
                                     interpolation=cv2.INTER_AREA))
        h0, w0 = levels[0].shape[:2]
        column_h = sum(lev.shape[0] + 1 for lev in levels[1:])
        atlas = np.zeros((max(h0 + 1, column_h), w0 + 1 + levels[1].shape[1] + 1, 3), np.uint8)
        xo, yo, y = [], [], 0
        for i, lev in enumerate(levels):
            x0, y0 = (0, 0) if i == 0 else (w0 + 1, y)
            h, w = lev.shape[:2]
            atlas[y0:y0 + h + 1, x0:x0 + w + 1] = np.pad(lev, ((0, 1), (0, 1), (0, 0)), mode="wrap")
            xo.append(x0)
            yo.append(y0)
            if i > 0:
                y += h + 1
        self.atlas = atlas
        self.levels = len(levels)
        self.x_off = np.array(xo, np.float32)
        self.y_off = np.array(yo, np.float32)
        self.width = np.array([lev.shape[1] for lev in levels], np.float32)
        self.height = np.array([lev.shape[0] for lev in levels], np.float32)
        self.texel = texel

    def sample(self, s, u, level):
        """[N,3] float32 albedo (0..255) at surface coordinates s, u (metres; s → columns,
        u → rows) and mip ``level`` [N] (0 = full resolution), blending the two nearest levels."""
        level = np.clip(level, 0.0, self.levels - 1.001).astype(np.float32)
        l0 = level.astype(np.int32)
        frac = (level - l0)[:, None]
        sx = s * np.float32(1.0 / self.texel)
        sy = u * np.float32(1.0 / self.texel)
        out = None
        for lev in (l0, l0 + 1):
            mx = _wrap(np.ldexp(sx, -lev) - np.float32(0.5), self.width[lev]) + self.x_off[lev]
            my = _wrap(np.ldexp(sy, -lev) - np.float32(0.5), self.height[lev]) + self.y_off[lev]
            texels = _remap(self.atlas, mx, my)
            out = texels.astype(np.float32) if out is None else out + (texels - out) * frac
        return out


def _wrap(x, period):
    """x mod period for float32 arrays (faster than np.mod), in [0, period]."""
    return x - np.floor(x / period) * period


@functools.lru_cache(maxsize=2)
def _build_textures(seed):
    """{material name: _MipAtlas} and the sky image (uint8), for one generator seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 424242]))
    tex = {
        "ground": _MipAtlas(_tex_ground(rng), 0.025),
        "facade_brick": _MipAtlas(_tex_facade(rng, "brick"), 0.025),
        "facade_plaster": _MipAtlas(_tex_facade(rng, "plaster"), 0.025),
        "facade_panel": _MipAtlas(_tex_facade(rng, "panel"), 0.025),
        "car_body": _MipAtlas(_tex_simple(rng, 0.62, (1, 1, 1), 0.01, 512, line_period=1.28), 0.01),
        "glass": _MipAtlas(_tex_simple(rng, 0.14, (0.85, 0.92, 1.0), 0.02, 256), 0.02),
        "pole": _MipAtlas(_tex_simple(rng, 0.5, (0.95, 0.97, 1.0), 0.01, 256), 0.01),
        "backdrop": _MipAtlas(_tex_backdrop(rng), 0.1),
    }
    sky = np.clip(np.rint(_tex_sky(rng) * 255.0), 0, 255).astype(np.uint8)
    sky = np.pad(sky, ((0, 1), (0, 1), (0, 0)), mode="edge")
    sky[:, -1] = sky[:, 0]
    return tex, sky


def _remap(src, map_x, map_y):
    """Bilinear lookup of ``src`` [h,w,C] uint8 at pixel coordinates [N] (inside the image) →
    [N,C] uint8. (cv2.remap needs maps smaller than 32767 per side, hence the [·,1024] shape.)"""
    n = map_x.shape[0]
    cols = 1024
    rows = max(1, -(-n // cols))
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n] = map_x
    my[:n] = map_y
    out = cv2.remap(src, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]

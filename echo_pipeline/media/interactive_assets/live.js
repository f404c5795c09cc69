/* echo-os live piece: draws a LiveView (fractal or flow) on a canvas, pan/zoom/animate, keep a view.
 *
 * The renderer is the JavaScript twin of echo_pipeline/render/backends/procedural/live.py: every
 * function below of the same name computes the same float64 operations in the same order (see
 * that module's docstring), so a kept view re-renders in Python as the picture shown here. Canvas
 * 2D ImageData with double-precision JS math is used rather than WebGL: float32 shaders could not
 * follow deep zooms (pixels collapse near 1e-7 of view width) nor match NumPy's float64 pixels.
 * Change both files together and bump LIVE_VERSION there.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- constants (live.py, verbatim)
  var LUT_SIZE = 1024;
  var BAILOUT2 = 65536.0;
  var LOG_BAILOUT = 5.545177444479562;
  var LN2 = 0.6931471805599453;
  var DZ_LIMIT = Math.pow(2, 400);
  var DZ_SCALE = Math.pow(2, -200);
  var DZ_LOG_STEP = 200 * LN2;
  var CYCLE_EPS2 = 1e-24;
  var TWO_PI = 6.283185307179586;
  var OCTAVE_SEED = 0x9E3779B9;
  var FLOW_GRID = 80.0;
  var FLOW_STEP = 200.0;

  function clamp(v, lo, hi) { return v < lo ? lo : (v > hi ? hi : v); }

  // ------------------------------------------------------------------------------------- colour
  function srgbToLinear(c) { return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }

  function encode(v) {
    v = clamp(v, 0.0, 1.0);
    var s = v <= 0.0031308 ? 12.92 * v : 1.055 * Math.pow(v, 1 / 2.4) - 0.055;
    return clamp(Math.floor(s * 255.0 + 0.5), 0, 255);
  }

  function makeLut(stops) {
    var n = stops.length, L = [], A = [], B = [], k, lut = new Float64Array(LUT_SIZE * 3);
    for (k = 0; k < n; k++) {
      var r = srgbToLinear(stops[k][0]), g = srgbToLinear(stops[k][1]), b = srgbToLinear(stops[k][2]);
      var lc = Math.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b);
      var mc = Math.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b);
      var sc = Math.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b);
      L.push(0.2104542553 * lc + 0.7936177850 * mc - 0.0040720468 * sc);
      A.push(1.9779984951 * lc - 2.4285922050 * mc + 0.4505937099 * sc);
      B.push(0.0259040371 * lc + 0.7827717662 * mc - 0.8086757660 * sc);
    }
    for (k = 0; k < LUT_SIZE; k++) {
      var t = k * (n - 1) / (LUT_SIZE - 1);
      var i = Math.min(Math.floor(t), n - 2);
      var f = t - i;
      f = f * f * (3 - 2 * f) * 0.35 + f * 0.65;
      var ll = L[i] * (1 - f) + L[i + 1] * f;
      var la = A[i] * (1 - f) + A[i + 1] * f;
      var lb = B[i] * (1 - f) + B[i + 1] * f;
      var l_ = ll + 0.3963377774 * la + 0.2158037573 * lb;
      var m_ = ll - 0.1055613458 * la - 0.0638541728 * lb;
      var s_ = ll - 0.0894841775 * la - 1.2914855480 * lb;
      var l3 = l_ * l_ * l_, m3 = m_ * m_ * m_, s3 = s_ * s_ * s_;
      lut[k * 3] = clamp(4.0767416621 * l3 - 3.3077115913 * m3 + 0.2309699292 * s3, 0.0, 1.0);
      lut[k * 3 + 1] = clamp(-1.2684380046 * l3 + 2.6097574011 * m3 - 0.3413193965 * s3, 0.0, 1.0);
      lut[k * 3 + 2] = clamp(-0.0041960863 * l3 - 0.7034186147 * m3 + 1.7076147010 * s3, 0.0, 1.0);
    }
    return lut;
  }

  function at(t) { return clamp(Math.floor(t * (LUT_SIZE - 1) + 0.5), 0, LUT_SIZE - 1) * 3; }
  function cyclic(t) { return at(1 - Math.abs(1 - 2 * (t - Math.floor(t)))); }

  // Plane coordinates of a screen position (pixels from the top-left corner); live.py `_plane`.
  function plane(view, sx, sy, out) {
    var w = view.width, h = view.height, px = view.scale / Math.sqrt(w * h);
    var u = (sx - w / 2) * px, v = (h / 2 - sy) * px;
    if (view.mirror) u = -u;
    if (view.flip) v = -v;
    var cos = Math.cos(view.rotation), sin = Math.sin(view.rotation);
    out[0] = view.center_x + (u * cos - v * sin);
    out[1] = view.center_y + (u * sin + v * cos);
    return out;
  }

  // ------------------------------------------------------------------------------------ fractal
  // One sample: fills res = [nu (NaN inside), log_de, normal_x, normal_y]; live.py `_iterate`.
  function iterate(view, x, y, res) {
    var kind = view.kind, power = view.power, julia = kind === 'julia', maxIter = view.max_iter;
    var cx, cy, it;
    res[0] = NaN; res[1] = -Infinity; res[2] = 0; res[3] = 0;
    if (julia) {
      cx = view.julia_c[0]; cy = view.julia_c[1]; it = 0;
    } else {
      cx = x; cy = y; it = 1;
      if (kind === 'mandelbrot') {
        var xq = x - 0.25, q = xq * xq + y * y, xb = x + 1;
        if ((q * (q + xq) < 0.25 * (y * y)) || (xb * xb + y * y < 0.0625)) return res;
      }
    }
    var dx = 1, dy = 0, k = 0, sx = x, sy = y, nextSave = 16, logP = Math.log(power);
    var pr, pi, nx, ar, ai, tq, q2;
    while (it < maxIter) {
      if (kind === 'ship') {
        pr = x * dx - y * dy;
        pi = x * dy + y * dx;
        var xy = x * y;
        pi = pi * Math.sign(xy);
        dx = 2 * pr + 1;
        dy = 2 * pi;
        nx = x * x - y * y + cx;
        y = Math.abs(2 * xy) + cy;
        x = nx;
      } else {
        ar = x; ai = y;
        for (q2 = 0; q2 < power - 2; q2++) { tq = ar * x - ai * y; ai = ar * y + ai * x; ar = tq; }
        pr = ar * dx - ai * dy;
        pi = ar * dy + ai * dx;
        dx = power * pr;
        dy = power * pi;
        if (!julia) dx = dx + 1;
        nx = ar * x - ai * y + cx;
        y = ar * y + ai * x + cy;
        x = nx;
      }
      it += 1;
      var r2 = x * x + y * y;
      if (r2 > BAILOUT2) {
        var lz = 0.5 * Math.log(r2);
        res[0] = it - Math.log(lz / LOG_BAILOUT) / logP;
        var m2 = dx * dx + dy * dy;
        res[1] = lz + Math.log(lz) - 0.5 * Math.log(m2) - k * DZ_LOG_STEP;
        var ur = x * dx + y * dy, ui = y * dx - x * dy, nn = Math.sqrt(ur * ur + ui * ui);
        res[2] = nn > 0 ? ur / nn : 0.0;
        res[3] = nn > 0 ? ui / nn : 0.0;
        return res;
      }
      if (dx * dx + dy * dy > DZ_LIMIT) { dx *= DZ_SCALE; dy *= DZ_SCALE; k += 1; }
      if (it === nextSave) {
        sx = x; sy = y; nextSave *= 2;
      } else {
        var ddx = x - sx, ddy = y - sy;
        if (ddx * ddx + ddy * ddy < CYCLE_EPS2) return res;  // an attracting cycle: inside
      }
    }
    return res;
  }

  // Per-view constants of the colouring (live.py `_fractal_colour`).
  function fractalShader(view, lut) {
    var unit = Math.sqrt(view.width * view.height);
    var bg = [srgbToLinear(view.background[0]), srgbToLinear(view.background[1]), srgbToLinear(view.background[2])];
    var s = {
      px: view.scale / unit, sc: Math.max(0.6, unit / 512.0), lut: lut, bg: bg,
      a04: at(0.04), a98: at(0.98), a12: at(0.12), a50: at(0.5), a30: at(0.3),
      ca: Math.cos(view.light_angle), sa: Math.sin(view.light_angle), interior: [0, 0, 0], edge: [0, 0, 0]
    };
    for (var c = 0; c < 3; c++) {
      if (view.style === 'relief') s.interior[c] = bg[c] * 0.7 + lut[s.a12 + c] * 0.3;
      else if (view.style === 'glow') s.interior[c] = bg[c] * 0.8;
      else s.interior[c] = bg[c] * 0.9 + lut[s.a30 + c] * 0.1;
      s.edge[c] = view.style === 'glow' ? lut[at(Math.min(1.0, 0.52 + 0.25 * view.glow_colour)) + c]
        : lut[s.a04 + c] * 0.9;
    }
    return s;
  }

  function shade(view, s, res, out) {
    var nu = res[0], lut = s.lut, c;
    if (nu !== nu) { out[0] = s.interior[0]; out[1] = s.interior[1]; out[2] = s.interior[2]; return out; }
    var nus = Math.max(nu, 0.0);
    var t = view.colour_freq * Math.log1p(nus) + view.colour_offset;
    if (view.reverse) t = -t;
    var d = Math.exp(Math.min(res[1], 30.0)) / s.px;
    if (!isFinite(d)) d = 0.0;
    var sc = s.sc, base, kk, sh, lam;
    if (view.style === 'relief') {
      base = cyclic(t);
      var hgt = view.light_height;
      lam = clamp((res[2] * s.ca + res[3] * s.sa + hgt) / (1 + hgt), 0.0, 1.0);
      sh = clamp(Math.pow(d / (3.0 * sc), 0.3), 0.0, 1.0);
      kk = clamp(0.1 + 0.95 * lam * (0.35 + 0.65 * sh), 0.0, 1.2);
      var spec = 0.3 * Math.pow(lam, 30.0) * sh, dk = clamp(1 - kk, 0.0, 1.0) * 0.8;
      for (c = 0; c < 3; c++) out[c] = lut[base + c] * kk + lut[s.a04 + c] * dk + spec * lut[s.a98 + c];
    } else if (view.style === 'glow') {
      var r = view.glow_radius * sc;
      var core = Math.exp(-d / r);
      var halo = 1.0 / (1.0 + Math.pow(d / (7.0 * r), 1.5));
      var band = 0.5 + 0.5 * Math.cos(TWO_PI * t);
      var dark = at(0.04 + 0.16 * band);
      var fine = 0.5 + 0.5 * Math.cos(TWO_PI * (t * 2.0));
      var lit = at(clamp(0.22 + 0.3 * core + 0.5 * fine * view.glow_colour, 0.0, 1.0));
      var hk = 0.22 * halo * (1 - core);
      for (c = 0; c < 3; c++) out[c] = lut[dark + c] * (1 - core) + lut[lit + c] * core + lut[s.a50 + c] * hk;
    } else {
      base = cyclic(t);
      sh = clamp(Math.pow(d / (4.0 * sc), 0.28), 0.0, 1.0);
      kk = 0.06 + 0.94 * sh;
      for (c = 0; c < 3; c++) out[c] = lut[base + c] * kk;
    }
    var e = clamp(d / (1.5 * sc), 0.0, 1.0);
    for (c = 0; c < 3; c++) out[c] = out[c] * e + s.edge[c] * (1 - e);
    return out;
  }

  // Rows y0..y1 of a fractal view into RGBA `data`; `step` > 1 draws a coarse preview (blocks).
  function drawFractalRows(view, s, data, y0, y1, step) {
    var w = view.width, h = view.height, pt = [0, 0], res = [0, 0, 0, 0], col = [0, 0, 0];
    for (var i = y0; i < y1; i += step) {
      for (var j = 0; j < w; j += step) {
        plane(view, j + 0.5, i + 0.5, pt);
        shade(view, s, iterate(view, pt[0], pt[1], res), col);
        var r = encode(col[0]), g = encode(col[1]), b = encode(col[2]);
        for (var bi = i; bi < Math.min(i + step, h); bi++) {
          for (var bj = j; bj < Math.min(j + step, w); bj++) {
            var o = (bi * w + bj) * 4;
            data[o] = r; data[o + 1] = g; data[o + 2] = b; data[o + 3] = 255;
          }
        }
      }
    }
  }

  // --------------------------------------------------------------------------------------- flow
  function hash(ix, iy, seed) {
    var h = seed ^ Math.imul(ix, 0x27D4EB2D) ^ Math.imul(iy, 0x165667B1);
    h ^= h >>> 15;
    h = Math.imul(h, 0x85EBCA6B);
    h ^= h >>> 13;
    h = Math.imul(h, 0xC2B2AE35);
    h ^= h >>> 16;
    return (h >>> 0) / 4294967296.0;
  }

  function valueNoise(x, y, seed) {
    var fx0 = Math.floor(x), fy0 = Math.floor(y), ix = fx0 | 0, iy = fy0 | 0;
    var fx = x - fx0, fy = y - fy0;
    var ux = fx * fx * (3 - 2 * fx), uy = fy * fy * (3 - 2 * fy);
    var a = hash(ix, iy, seed), b = hash(ix + 1, iy, seed), c = hash(ix, iy + 1, seed), d = hash(ix + 1, iy + 1, seed);
    var top = a + (b - a) * ux, bot = c + (d - c) * ux;
    return (top + (bot - top) * uy) * 2 - 1;
  }

  function fbm(x, y, seed, octaves) {
    var total = 0, amp = 1.0, norm = 0.0;
    for (var o = 0; o < octaves; o++) {
      total = total + amp * valueNoise(x, y, (seed + o * OCTAVE_SEED) >>> 0);
      norm += amp;
      amp *= 0.5;
      var x2 = 1.6 * x - 1.2 * y + 17.0;
      y = 1.2 * x + 1.6 * y - 9.0;
      x = x2;
    }
    return total / norm;
  }

  function flowScalar(view, wx, wy) {
    var t = view.t;
    var nx = wx * view.freq + view.phase[0] - t * 0.15 * Math.cos(view.direction);
    var ny = wy * view.freq + view.phase[1] - t * 0.15 * Math.sin(view.direction);
    var ca = Math.cos(0.35 * t), sa = Math.sin(0.35 * t);
    return fbm(nx, ny, view.seed, view.octaves) * ca + fbm(nx + 5.2, ny + 1.3, (view.seed + 7919) >>> 0, view.octaves) * sa;
  }

  function flowField(view) {
    var w = view.width, h = view.height, g = Math.sqrt(w * h) / FLOW_GRID;
    var gw = Math.ceil(w / g), gh = Math.ceil(h / g), W3 = gw + 3, r, c, pt = [0, 0];
    var F = new Float64Array((gh + 3) * W3);
    for (r = 0; r < gh + 3; r++) {
      for (c = 0; c < W3; c++) {
        plane(view, (c - 1) * g, (r - 1) * g, pt);
        F[r * W3 + c] = flowScalar(view, pt[0], pt[1]);
      }
    }
    var n = (gh + 1) * (gw + 1), VX = new Float64Array(n), VY = new Float64Array(n);
    var dcx = Math.cos(view.direction - view.rotation), dsy = Math.sin(view.direction - view.rotation);
    for (r = 0; r <= gh; r++) {
      for (c = 0; c <= gw; c++) {
        var vx, vy;
        if (view.kind === 'curl') {
          var fdx = F[(r + 1) * W3 + c + 2] - F[(r + 1) * W3 + c];
          var fdy = F[(r + 2) * W3 + c + 1] - F[r * W3 + c + 1];
          vx = fdy; vy = -fdx;
          var m0 = Math.sqrt(vx * vx + vy * vy);
          if (m0 > 1e-12) { vx = vx / m0; vy = vy / m0; } else { vx = 1.0; vy = 0.0; }
        } else {
          var ang = view.direction + F[(r + 1) * W3 + c + 1] * view.turns * TWO_PI - view.rotation;
          vx = Math.cos(ang); vy = Math.sin(ang);
        }
        vx = vx + view.drift * dcx;
        vy = vy + view.drift * dsy;
        var m = Math.sqrt(vx * vx + vy * vy) + 1e-12;
        VX[r * (gw + 1) + c] = vx / m;
        VY[r * (gw + 1) + c] = vy / m;
      }
    }
    return {vx: VX, vy: VY, g: g, gw: gw, gh: gh};
  }

  function lookup(f, px, py, out) {
    var fx = px / f.g, fy = py / f.g, gw1 = f.gw + 1;
    var i0 = clamp(Math.floor(fy), 0, f.gh - 1), j0 = clamp(Math.floor(fx), 0, f.gw - 1);
    var ax = clamp(fx - j0, 0.0, 1.0), ay = clamp(fy - i0, 0.0, 1.0);
    var a = i0 * gw1 + j0, b = a + gw1, V = f.vx, top, bot;
    top = V[a] + (V[a + 1] - V[a]) * ax; bot = V[b] + (V[b + 1] - V[b]) * ax;
    var vx = top + (bot - top) * ay;
    V = f.vy;
    top = V[a] + (V[a + 1] - V[a]) * ax; bot = V[b] + (V[b + 1] - V[b]) * ax;
    var vy = top + (bot - top) * ay;
    var m = Math.sqrt(vx * vx + vy * vy) + 1e-12;
    out[0] = vx / m; out[1] = vy / m;
    return out;
  }

  function seeds(view) {
    var w = view.width, h = view.height, s = view.seed;
    var ny = Math.max(1, Math.floor(Math.sqrt(view.particles * h / w) + 0.5));
    var nx = Math.max(1, Math.floor(view.particles / ny + 0.5));
    var n = nx * ny, PX = new Float64Array(n), PY = new Float64Array(n), T = new Float64Array(n);
    var WT = new Float64Array(n), pt = [0, 0];
    for (var i = 0; i < ny; i++) {
      for (var j = 0; j < nx; j++) {
        var p = i * nx + j;
        PX[p] = (j + hash(i, j, (s + 1) >>> 0)) * (w / nx);
        PY[p] = (i + hash(i, j, (s + 2) >>> 0)) * (h / ny);
        plane(view, PX[p], PY[p], pt);
        var wx = pt[0], wy = pt[1];
        var tn = fbm(wx * view.colour_freq + 3.1, wy * view.colour_freq - 4.7, (s + 3) >>> 0, 2);
        var tone = view.colour_shift + 0.5 + 0.8 * tn + 0.1 * (hash(i, j, (s + 4) >>> 0) - 0.5);
        T[p] = tone - Math.floor(tone);
        var wt = 0.55 + 0.45 * hash(i, j, (s + 5) >>> 0);
        if (view.space > 0) {
          var env = fbm(wx * 1.3 + 11.0, wy * 1.3 - 6.0, (s + 6) >>> 0, 2);
          wt = wt * Math.pow(clamp((env - (view.space - 0.5)) / 0.2, 0.0, 1.0), 1.5);
        }
        WT[p] = wt;
      }
    }
    return {px: PX, py: PY, tone: T, weight: WT, n: n};
  }

  function blur(a, w, h) {
    var tmp = new Float64Array(w * h), out = new Float64Array(w * h), i, j, o;
    for (i = 0; i < h; i++) {
      o = i * w;
      for (j = 0; j < w; j++) {
        tmp[o + j] = 0.25 * a[o + Math.max(j - 1, 0)] + 0.5 * a[o + j] + 0.25 * a[o + Math.min(j + 1, w - 1)];
      }
    }
    for (i = 0; i < h; i++) {
      var up = Math.max(i - 1, 0) * w, dn = Math.min(i + 1, h - 1) * w;
      o = i * w;
      for (j = 0; j < w; j++) out[o + j] = 0.25 * tmp[up + j] + 0.5 * tmp[o + j] + 0.25 * tmp[dn + j];
    }
    return out;
  }

  function drawFlow(view, lut, data) {
    var w = view.width, h = view.height, f = flowField(view), sd = seeds(view), n = sd.n;
    var step = Math.sqrt(w * h) / FLOW_STEP, subs = Math.ceil(step / 0.75), nSteps = view.steps;
    var accW = new Float64Array(w * h), accT = new Float64Array(w * h);
    var PX = sd.px, PY = sd.py, QX = new Float64Array(n), QY = new Float64Array(n), WK = new Float64Array(n);
    var u = [0, 0], p, s, sub, corner;
    for (s = 0; s < nSteps; s++) {
      var taper = Math.pow(Math.sin(Math.PI * ((s + 0.5) / nSteps)), 0.6);
      for (p = 0; p < n; p++) {
        lookup(f, PX[p], PY[p], u);
        var mx = PX[p] + u[0] * (0.5 * step), my = PY[p] + u[1] * (0.5 * step);
        lookup(f, mx, my, u);
        QX[p] = PX[p] + u[0] * step;
        QY[p] = PY[p] + u[1] * step;
        WK[p] = sd.weight[p] * taper;
      }
      // the same order as live.py's np.add.at calls: sub-step, corner, particle
      for (sub = 0; sub < subs; sub++) {
        var a = sub / subs;
        for (corner = 0; corner < 4; corner++) {
          var oy = corner >> 1, ox = corner & 1;
          for (p = 0; p < n; p++) {
            var sx = PX[p] + (QX[p] - PX[p]) * a - 0.5, sy = PY[p] + (QY[p] - PY[p]) * a - 0.5;
            var x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
            var xx = x0 + ox, yy = y0 + oy;
            if (xx < 0 || xx >= w || yy < 0 || yy >= h) continue;
            var cw = corner === 0 ? (1 - fx) * (1 - fy) : corner === 1 ? fx * (1 - fy)
              : corner === 2 ? (1 - fx) * fy : fx * fy;
            var dep = WK[p] * cw, o = yy * w + xx;
            accW[o] += dep;
            accT[o] += dep * sd.tone[p];
          }
        }
      }
      var swap = PX; PX = QX; QX = swap;
      swap = PY; PY = QY; QY = swap;
    }
    accW = blur(accW, w, h);
    accT = blur(accT, w, h);
    var k = step / subs, c, i, j;
    var bg = [srgbToLinear(view.background[0]), srgbToLinear(view.background[1]), srgbToLinear(view.background[2])];
    var a10 = at(0.1), a97 = at(0.97), paperTint = [0.08, 0.072, 0.06], col = [0, 0, 0];
    for (i = 0; i < h; i++) {
      var ygrad = 1.0 - 0.35 * ((i + 0.5) / h);
      for (j = 0; j < w; j++) {
        var q = i * w + j, tonePx = accT[q] / Math.max(accW[q], 1e-9), density = accW[q] * k;
        if (view.style === 'silk') {
          var ci = at(0.35 + 0.65 * tonePx), light = 1.0 - Math.exp(-density * 0.9);
          for (c = 0; c < 3; c++) {
            var base = (bg[c] * 0.9 + lut[a10 + c] * 0.1) * ygrad;
            col[c] = base * (1 - 0.9 * light) + lut[ci + c] * (light * 1.15);
          }
        } else {
          var ink = at(0.78 * tonePx), alpha = 1.0 - Math.exp(-density * 0.9);
          for (c = 0; c < 3; c++) col[c] = (lut[a97 + c] * 0.75 + paperTint[c]) * (1 - alpha) + lut[ink + c] * alpha;
        }
        var o4 = q * 4;
        data[o4] = encode(col[0]); data[o4 + 1] = encode(col[1]); data[o4 + 2] = encode(col[2]); data[o4 + 3] = 255;
      }
    }
  }

  // ------------------------------------------------------------------------------------- the app
  var payload = JSON.parse(document.getElementById('echo-live-data').textContent);
  var initial = Object.freeze(JSON.parse(JSON.stringify(payload.view)));
  var view = JSON.parse(JSON.stringify(payload.view));
  var canvas = document.getElementById('live');
  var ctx = canvas.getContext('2d', {willReadFrequently: true});
  canvas.width = view.width;
  canvas.height = view.height;
  var image = ctx.createImageData(view.width, view.height);
  var lut = makeLut(view.palette), lutKey = JSON.stringify(view.palette);
  var playing = view.motif === 'flow' && !matchMedia('(prefers-reduced-motion: reduce)').matches;
  var job = 0, pending = [], frames = 0, lastMs = 0, lastTick = null, drawing = false;
  var els = {};
  ['motif', 'kind', 'seed', 'center', 'scale', 'zoom', 'iters', 'time', 'ms', 'play', 'keep', 'record', 'json',
   'download', 'copy', 'zin', 'zout', 'reset', 'close', 'timerow', 'itersrow'].forEach(function (id) {
    els[id] = document.getElementById(id);
  });

  function fmt(v, digits) { return Number(v).toPrecision(digits); }

  function showPanel() {
    els.motif.textContent = view.motif;
    els.kind.textContent = view.motif === 'fractal' ? view.kind + (view.power > 2 ? ' (z^' + view.power + ')' : '')
      + ', ' + view.style : view.kind + ' field, ' + view.style;
    els.seed.textContent = String(view.seed);
    // enough digits to tell two neighbouring pixels apart at this zoom
    var digits = Math.min(17, Math.max(6, Math.ceil(-Math.log10(view.scale / Math.sqrt(view.width * view.height))) + 3));
    els.center.textContent = fmt(view.center_x, digits) + ', ' + fmt(view.center_y, digits);
    els.scale.textContent = fmt(view.scale, 6);
    els.zoom.textContent = '\u00d7' + fmt(initial.scale / view.scale, 4);
    els.iters.textContent = String(view.max_iter);
    els.time.textContent = fmt(view.t, 4);
    els.ms.textContent = lastMs.toFixed(0) + ' ms';
    els.timerow.hidden = els.time.hidden = view.motif !== 'flow';
    els.itersrow.hidden = els.iters.hidden = view.motif !== 'fractal';
    els.play.hidden = view.motif !== 'flow';
    els.play.textContent = playing ? 'Pause' : 'Play';
    els.play.setAttribute('aria-pressed', playing ? 'false' : 'true');
  }

  function finished() {
    frames += 1;
    drawing = false;
    canvas.dataset.frames = String(frames);
    var done = pending;
    pending = [];
    done.forEach(function (resolve) { resolve(api.getView()); });
    showPanel();
  }

  // Draw the current view: flow in one go; a fractal progressively (a coarse preview when the
  // full frame is slow, then full-resolution rows in time slices) so the page stays responsive.
  function draw() {
    var mine = ++job, started = performance.now();
    drawing = true;
    var key = JSON.stringify(view.palette);
    if (key !== lutKey) { lut = makeLut(view.palette); lutKey = key; }
    if (view.motif === 'flow') {
      drawFlow(view, lut, image.data);
      ctx.putImageData(image, 0, 0);
      lastMs = performance.now() - started;  // compute time of the frame
      finished();
      return;
    }
    var s = fractalShader(view, lut), w = view.width, h = view.height, row = 0, work = 0;
    var slow = w * h * view.max_iter > 4e7;
    if (slow) {
      drawFractalRows(view, s, image.data, 0, h, 4);
      ctx.putImageData(image, 0, 0);
      work += performance.now() - started;
    }
    function slice() {
      if (mine !== job) return;  // a newer view took over
      var begin = performance.now(), until = begin + 24;
      var from = row;
      while (row < h && performance.now() < until) {
        drawFractalRows(view, s, image.data, row, Math.min(h, row + 4), 1);
        row = Math.min(h, row + 4);
      }
      ctx.putImageData(image, 0, 0, 0, from, w, row - from);
      work += performance.now() - begin;
      if (row < h) { requestAnimationFrame(slice); return; }
      lastMs = work;  // compute time, not counting the frames it waited for
      finished();
    }
    if (slow) requestAnimationFrame(slice); else slice();
  }

  var queued = false;
  function redraw() {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () { queued = false; if (!(playing && view.motif === 'flow')) draw(); });
  }

  function tick(now) {
    if (playing && view.motif === 'flow') {
      if (lastTick !== null) view.t = view.t + Math.min(0.1, (now - lastTick) / 1000) * 0.6;
      lastTick = now;
      draw();
    } else {
      lastTick = null;
    }
    requestAnimationFrame(tick);
  }

  // ---------------------------------------------------------------------------- camera moves
  function screenPoint(evt) {
    var rect = canvas.getBoundingClientRect();
    return [(evt.clientX - rect.left) * view.width / rect.width, (evt.clientY - rect.top) * view.height / rect.height];
  }

  // Zoom by `factor` (< 1: in) keeping the plane point under screen position (sx, sy) in place.
  function zoomAt(factor, sx, sy) {
    var before = plane(view, sx, sy, [0, 0]);
    view.scale = clamp(view.scale * factor, 1e-13 * Math.max(1, Math.abs(view.center_x), Math.abs(view.center_y)), 1e6);
    var after = plane(view, sx, sy, [0, 0]);
    view.center_x += before[0] - after[0];
    view.center_y += before[1] - after[1];
    redraw();
  }

  function panBy(from, to) {
    var a = plane(view, from[0], from[1], [0, 0]), b = plane(view, to[0], to[1], [0, 0]);
    view.center_x += a[0] - b[0];
    view.center_y += a[1] - b[1];
    redraw();
  }

  var pointers = new Map();
  canvas.addEventListener('pointerdown', function (evt) {
    canvas.setPointerCapture(evt.pointerId);
    pointers.set(evt.pointerId, screenPoint(evt));
  });
  canvas.addEventListener('pointermove', function (evt) {
    if (!pointers.has(evt.pointerId)) return;
    var prev = pointers.get(evt.pointerId), now = screenPoint(evt);
    if (pointers.size === 1) {
      panBy(prev, now);
    } else if (pointers.size === 2) {  // pinch: zoom by the change in finger distance, about their midpoint
      var other = Array.from(pointers.entries()).filter(function (e) { return e[0] !== evt.pointerId; })[0][1];
      var d0 = Math.hypot(prev[0] - other[0], prev[1] - other[1]), d1 = Math.hypot(now[0] - other[0], now[1] - other[1]);
      if (d0 > 2 && d1 > 2) zoomAt(d0 / d1, (now[0] + other[0]) / 2, (now[1] + other[1]) / 2);
    }
    pointers.set(evt.pointerId, now);
  });
  function release(evt) { pointers.delete(evt.pointerId); }
  canvas.addEventListener('pointerup', release);
  canvas.addEventListener('pointercancel', release);
  canvas.addEventListener('wheel', function (evt) {
    evt.preventDefault();
    var dy = evt.deltaY * (evt.deltaMode === 1 ? 16 : evt.deltaMode === 2 ? 400 : 1);
    var p = screenPoint(evt);
    zoomAt(clamp(Math.exp(dy * 0.002), 0.25, 4), p[0], p[1]);
  }, {passive: false});

  function centreZoom(factor) { zoomAt(factor, view.width / 2, view.height / 2); }
  els.zin.addEventListener('click', function () { centreZoom(1 / 1.5); });
  els.zout.addEventListener('click', function () { centreZoom(1.5); });
  els.reset.addEventListener('click', function () { api.setView(initial); });
  els.play.addEventListener('click', function () { setPlaying(!playing); });
  document.addEventListener('keydown', function (evt) {
    if (evt.target && (evt.target.tagName === 'TEXTAREA' || evt.target.tagName === 'INPUT')) return;
    var step = Math.min(view.width, view.height) * 0.1, c = [view.width / 2, view.height / 2], hit = true;
    if (evt.key === '+' || evt.key === '=') centreZoom(1 / 1.5);
    else if (evt.key === '-' || evt.key === '_') centreZoom(1.5);
    else if (evt.key === 'ArrowLeft') panBy(c, [c[0] + step, c[1]]);
    else if (evt.key === 'ArrowRight') panBy(c, [c[0] - step, c[1]]);
    else if (evt.key === 'ArrowUp') panBy(c, [c[0], c[1] + step]);
    else if (evt.key === 'ArrowDown') panBy(c, [c[0], c[1] - step]);
    else if (evt.key === '0') api.setView(initial);
    else if (evt.key === ' ' && view.motif === 'flow') setPlaying(!playing);
    else if (evt.key === 'k') keep();
    else hit = false;
    if (hit) evt.preventDefault();
  });

  function setPlaying(on) {
    playing = Boolean(on) && view.motif === 'flow';
    showPanel();
    if (!playing) redraw();
  }

  // ----------------------------------------------------------------------------- keep a view
  var blobUrl = null;
  function record() {
    return {format: 'echo-live-view', version: view.version, source: payload.record, view: api.getView()};
  }
  function keep() {
    setPlaying(false);  // the frame on screen is the one kept
    var text = JSON.stringify(record(), null, 2);
    els.json.value = text;
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = URL.createObjectURL(new Blob([text + '\n'], {type: 'application/json'}));
    els.download.href = blobUrl;
    els.record.hidden = false;
    els.copy.textContent = 'Copy';
    return JSON.parse(text);
  }
  els.keep.addEventListener('click', keep);
  els.close.addEventListener('click', function () { els.record.hidden = true; });
  els.copy.addEventListener('click', function () {
    function copied() { els.copy.textContent = 'Copied'; els.copy.dataset.copied = '1'; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(els.json.value).then(copied, function () { fallback(); });
    } else {
      fallback();
    }
    function fallback() {
      els.json.focus();
      els.json.select();
      try { if (document.execCommand('copy')) copied(); } catch (e) { els.copy.textContent = 'Select and copy'; }
    }
  });

  // ------------------------------------------------------------------------------ test hooks
  var api = {
    getView: function () { return JSON.parse(JSON.stringify(view)); },
    // Replace (or update) the view; resolves with the view once its final frame is drawn.
    setView: function (next) {
      var merged = Object.assign({}, view, JSON.parse(JSON.stringify(next)));
      if (merged.width !== view.width || merged.height !== view.height) {
        canvas.width = merged.width;
        canvas.height = merged.height;
        image = ctx.createImageData(merged.width, merged.height);
      }
      view = merged;
      var done = new Promise(function (resolve) { pending.push(resolve); });
      draw();
      return done;
    },
    get rendered() {
      return !drawing && !queued && frames > 0 ? Promise.resolve(api.getView())
        : new Promise(function (resolve) { pending.push(resolve); });
    },
    get frames() { return frames; },
    get drawMs() { return lastMs; },
    get playing() { return playing; },
    play: function (on) { setPlaying(on !== false); },
    keep: keep,
    record: record
  };
  window.echoLive = api;

  showPanel();
  draw();
  requestAnimationFrame(tick);
})();

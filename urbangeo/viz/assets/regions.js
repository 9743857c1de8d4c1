(function () {
'use strict';
var LEVELS = 254, MAXLAT = 85.0511287798;
// Rings per canvas path: a path of many thousand rings fills far slower than several small.
var BATCH = 16;

function decode(s) {
  var bin = atob(s), n = bin.length, u = new Uint8Array(n);
  for (var i = 0; i < n; i++) { u[i] = bin.charCodeAt(i); }
  return u.buffer;
}
function hexRgb(h) {
  return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)];
}
// A ramp as LEVELS colours (linear between the stops, as urbangeo.viz.colors.ramp).
function rampPalette(stops) {
  var rgb = stops.map(hexRgb), out = [];
  for (var k = 0; k < LEVELS; k++) {
    var pos = k / (LEVELS - 1) * (stops.length - 1);
    var i = Math.min(Math.floor(pos), stops.length - 2), f = pos - i, c = [];
    for (var j = 0; j < 3; j++) { c.push(Math.round(rgb[i][j] + (rgb[i + 1][j] - rgb[i][j]) * f)); }
    out.push('rgb(' + c.join(',') + ')');
  }
  return out;
}

// Regions (cells of the map, of one chunk, or blocks): outlines projected to 0..1 Web
// Mercator, ring bounding boxes, values decoded when first read.
function Source(raw, schema, chunk) {
  this.raw = raw; this.schema = schema; this.chunk = chunk; this.ids = raw.ids;
  this.n = raw.ids.length; this.cols = {}; this.codes = {};
  var ll = new Int32Array(decode(raw.geom.coords)), nv = ll.length / 2;
  var xy = new Float64Array(ll.length);
  for (var v = 0; v < nv; v++) {
    var lat = Math.max(-MAXLAT, Math.min(MAXLAT, ll[2 * v + 1] / 1e6));
    var s = Math.sin(lat * Math.PI / 180);
    xy[2 * v] = (ll[2 * v] / 1e6 + 180) / 360;
    xy[2 * v + 1] = 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
  }
  this.ll = ll; this.xy = xy;
  var start;
  if (raw.geom.start) { start = new Uint32Array(decode(raw.geom.start)); }
  else {
    start = new Uint32Array(nv / 4 + 1);
    for (var r0 = 0; r0 < start.length; r0++) { start[r0] = 4 * r0; }
  }
  this.start = start; this.nr = start.length - 1;
  this.ring = raw.geom.ring ? new Int32Array(decode(raw.geom.ring)) : null;
  var bb = new Float64Array(4 * this.nr);
  for (var r = 0; r < this.nr; r++) {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (var k = start[r]; k < start[r + 1]; k++) {
      var x = xy[2 * k], y = xy[2 * k + 1];
      if (x < x0) { x0 = x; } if (x > x1) { x1 = x; }
      if (y < y0) { y0 = y; } if (y > y1) { y1 = y; }
    }
    bb[4 * r] = x0; bb[4 * r + 1] = y0; bb[4 * r + 2] = x1; bb[4 * r + 3] = y1;
  }
  this.bb = bb;
}
Source.prototype.rec = function (r) { return this.ring ? this.ring[r] : r; };
Source.prototype.col = function (key) {
  if (!(key in this.cols)) {
    var raw = this.raw.cols[key], type = this.schema[key] && this.schema[key].type;
    this.cols[key] = raw === undefined ? null
      : new (type === 'c' ? Uint16Array : Float32Array)(decode(raw));
  }
  return this.cols[key];
};
// A record's value of ``key`` as shown (number, text or null).
Source.prototype.value = function (key, i) {
  if (key === 'region_id') { return this.ids[i]; }
  var col = this.col(key), field = this.schema[key];
  if (!col) { return null; }
  var v = col[i];
  if (field.type === 'c') { return v ? field.cats[v - 1] : null; }
  return isFinite(v) ? v : null;
};
Source.prototype.rings = function (i) {  // the rings of record i
  if (!this.ring) { return [i]; }
  if (!this.byRecord) {
    this.byRecord = {};
    for (var r = 0; r < this.nr; r++) {
      (this.byRecord[this.ring[r]] = this.byRecord[this.ring[r]] || []).push(r);
    }
  }
  return this.byRecord[i] || [];
};
Source.prototype.latlngs = function (i) {
  var self = this;
  return this.rings(i).map(function (r) {
    var out = [];
    for (var k = self.start[r]; k < self.start[r + 1]; k++) {
      out.push([self.ll[2 * k + 1] / 1e6, self.ll[2 * k] / 1e6]);
    }
    return out;
  });
};
Source.prototype.bounds = function (i) {  // [[south, west], [north, east]] of record i
  var s = Infinity, w = Infinity, n = -Infinity, e = -Infinity;
  this.latlngs(i).forEach(function (ring) {
    ring.forEach(function (p) {
      s = Math.min(s, p[0]); n = Math.max(n, p[0]); w = Math.min(w, p[1]); e = Math.max(e, p[1]);
    });
  });
  return [[s, w], [n, e]];
};
Source.prototype.index = function (id) {
  if (!this.byId) {
    this.byId = {};
    for (var i = 0; i < this.n; i++) { this.byId[this.ids[i]] = i; }
  }
  var i = this.byId[id];
  return i === undefined ? -1 : i;
};
// The ring under the point (x, y) in 0..1 Mercator, through a bucket grid built once; -1: none.
Source.prototype.hit = function (x, y) {
  if (!this.grid) { this.buildGrid(); }
  var g = this.grid, gx = Math.floor((x - g.x0) / g.size), gy = Math.floor((y - g.y0) / g.size);
  if (gx < 0 || gy < 0 || gx >= g.nx || gy >= g.ny) { return -1; }
  var b = gy * g.nx + gx, bb = this.bb;
  for (var k = g.start[b]; k < g.start[b + 1]; k++) {
    var r = g.items[k];
    if (x < bb[4 * r] || x > bb[4 * r + 2] || y < bb[4 * r + 1] || y > bb[4 * r + 3]) { continue; }
    if (this.inside(r, x, y)) { return r; }
  }
  return -1;
};
Source.prototype.inside = function (r, x, y) {
  var xy = this.xy, a = this.start[r], b = this.start[r + 1], hit = false;
  for (var i = a, j = b - 1; i < b; j = i++) {
    var xi = xy[2 * i], yi = xy[2 * i + 1], xj = xy[2 * j], yj = xy[2 * j + 1];
    if (((yi > y) !== (yj > y)) && (x < (xj - xi) * (y - yi) / (yj - yi) + xi)) { hit = !hit; }
  }
  return hit;
};
Source.prototype.buildGrid = function () {
  var bb = this.bb, nr = this.nr, x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (var r = 0; r < nr; r++) {
    x0 = Math.min(x0, bb[4 * r]); y0 = Math.min(y0, bb[4 * r + 1]);
    x1 = Math.max(x1, bb[4 * r + 2]); y1 = Math.max(y1, bb[4 * r + 3]);
  }
  var side = Math.max(1, Math.min(2048, Math.ceil(Math.sqrt(nr))));
  var size = Math.max(x1 - x0, y1 - y0, 1e-12) / side * (1 + 1e-9);
  var nx = Math.max(1, Math.ceil((x1 - x0) / size)), ny = Math.max(1, Math.ceil((y1 - y0) / size));
  var count = new Uint32Array(nx * ny + 1), pass, gx0, gx1, gy0, gy1, items = null, fill = null;
  for (pass = 0; pass < 2; pass++) {
    for (r = 0; r < nr; r++) {
      gx0 = Math.floor((bb[4 * r] - x0) / size); gx1 = Math.floor((bb[4 * r + 2] - x0) / size);
      gy0 = Math.floor((bb[4 * r + 1] - y0) / size); gy1 = Math.floor((bb[4 * r + 3] - y0) / size);
      for (var gy = gy0; gy <= gy1; gy++) {
        for (var gx = gx0; gx <= gx1; gx++) {
          var b = gy * nx + gx;
          if (pass === 0) { count[b + 1]++; } else { items[fill[b]++] = r; }
        }
      }
    }
    if (pass === 0) {
      for (var q = 0; q < nx * ny; q++) { count[q + 1] += count[q]; }
      items = new Uint32Array(count[nx * ny]); fill = count.slice(0, nx * ny);
    }
  }
  this.grid = {x0: x0, y0: y0, size: size, nx: nx, ny: ny, start: count, items: items};
};

// The canvas all region layers are drawn on (a Leaflet renderer: it follows pans and zooms).
var Painter = L.Renderer.extend({
  options: {padding: 0.1},
  initialize: function (app, options) {
    L.Renderer.prototype.initialize.call(this, options);
    this.app = app; this.active = []; this.frames = 0; this.drawn = 0;
  },
  _initContainer: function () {
    this._container = document.createElement('canvas');
    this._container.className = 'urbangeo-regions';
    this._ctx = this._container.getContext('2d');
  },
  _destroyContainer: function () { L.DomUtil.remove(this._container); },
  _update: function () {
    if (this._map._animatingZoom && this._bounds) { return; }
    L.Renderer.prototype._update.call(this);
    this.redraw();  // on the next frame: the page's first view is set after the layers
  },
  _paint: function () {
    var b = this._bounds, size = b.getSize(), c = this._container;
    var m = window.devicePixelRatio > 1 ? 2 : 1;
    L.DomUtil.setPosition(c, b.min);
    c.width = m * size.x; c.height = m * size.y;
    c.style.width = size.x + 'px'; c.style.height = size.y + 'px';
    this.draw();
  },
  redraw: function () {
    var self = this;
    if (!this._map || this._pending) { return; }
    this._pending = L.Util.requestAnimFrame(function () {
      self._pending = null;
      if (self._map && self._bounds) { self._paint(); }
    });
  },
  draw: function () {
    var t0 = performance.now(), app = this.app, map = this._map, ctx = this._ctx;
    var b = this._bounds, size = b.getSize(), m = window.devicePixelRatio > 1 ? 2 : 1;
    ctx.setTransform(m, 0, 0, m, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    var S = 256 * Math.pow(2, this._zoom), po = map.getPixelOrigin();
    var ox = b.min.x + po.x, oy = b.min.y + po.y;
    var view = [ox / S, oy / S, (ox + size.x) / S, (oy + size.y) / S];
    var sources = app.sources(view, S), drawn = 0, self = this;
    this.shown = sources;
    this.active.forEach(function (layer) {
      sources.forEach(function (src) { drawn += self.drawLayer(layer, src, S, ox, oy, view); });
    });
    this.drawn = drawn; this.frames++;
    this.lastMs = performance.now() - t0;
    app.afterDraw();
  },
  drawLayer: function (layer, src, S, ox, oy, view) {
    var ctx = this._ctx, codes = layer.codes(src), bb = src.bb, xy = src.xy, st = src.start;
    var np = layer.palette.length, counts = new Uint32Array(np + 2), vis = [], only = layer.only;
    for (var r = 0; r < src.nr; r++) {
      if (bb[4 * r + 2] < view[0] || bb[4 * r] > view[2]
          || bb[4 * r + 3] < view[1] || bb[4 * r + 1] > view[3]) { continue; }
      var code = codes[src.rec(r)];
      if (only && !code) { continue; }
      vis.push(r); counts[code + 1]++;
    }
    for (var c = 1; c < counts.length; c++) { counts[c] += counts[c - 1]; }
    var sorted = new Uint32Array(vis.length), at = counts.slice();
    for (var k = 0; k < vis.length; k++) { sorted[at[codes[src.rec(vis[k])]]++] = vis[k]; }
    function path(r) {
      var a = st[r], e = st[r + 1];
      ctx.moveTo(xy[2 * a] * S - ox, xy[2 * a + 1] * S - oy);
      for (var v = a + 1; v < e; v++) { ctx.lineTo(xy[2 * v] * S - ox, xy[2 * v + 1] * S - oy); }
      ctx.closePath();
    }
    ctx.globalAlpha = layer.spec.opacity;
    for (c = 1; c <= np; c++) {
      if (counts[c + 1] === counts[c]) { continue; }
      ctx.fillStyle = layer.palette[c - 1];
      ctx.beginPath();
      for (k = counts[c]; k < counts[c + 1]; k++) {
        path(sorted[k]);
        if ((k - counts[c]) % BATCH === BATCH - 1) { ctx.fill(); ctx.beginPath(); }
      }
      ctx.fill();
    }
    // Outlines only where a cell is big enough on screen to show them.
    if (this.app.D.cell_size * (src.blocks ? this.app.D.blocks.k : 1) * S >= 4) {
      var spec = layer.spec;
      ctx.globalAlpha = 0.8;
      ctx.strokeStyle = spec.outline || '#ffffff';
      ctx.lineWidth = spec.outline ? 1.2 : 0.6;
      ctx.setLineDash(spec.dash ? spec.dash.split(' ').map(Number) : []);
      ctx.beginPath();
      for (k = 0; k < vis.length; k++) {
        path(vis[k]);
        if (k % BATCH === BATCH - 1) { ctx.stroke(); ctx.beginPath(); }
      }
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.globalAlpha = 1;
    return vis.length - (counts[1] - counts[0]);
  }
});

// One region layer of the layer list: its colours are computed the first time it is drawn.
var RegionLayer = L.Layer.extend({
  initialize: function (app, spec) {
    this.app = app; this.spec = spec; this.id = L.Util.stamp(this);
    var scale = spec.scale || {};
    this.only = !!scale.only;
    this.palette = scale.scheme === 'seq' ? app.ramps.seq
      : scale.scheme === 'div' ? app.ramps.div : (scale.colors || []);
  },
  onAdd: function () { this.app.activate(this, true); },
  onRemove: function () { this.app.activate(this, false); },
  codes: function (src) {
    if (src.codes[this.id]) { return src.codes[this.id]; }
    var spec = this.spec, scale = spec.scale || {}, out = new Uint16Array(src.n);
    var col = spec.color_key ? src.col(spec.color_key) : null, i;
    if (scale.scheme === 'const' && !spec.color_key) { out.fill(1); }
    else if (col && (scale.scheme === 'cat' || scale.scheme === 'const')) {
      for (i = 0; i < src.n; i++) { out[i] = scale.scheme === 'cat' ? col[i] : (col[i] ? 1 : 0); }
    } else if (col && (scale.scheme === 'seq' || scale.scheme === 'div')) {
      var lo = scale.lo, span = scale.hi > scale.lo ? scale.hi - scale.lo : 1, log = scale.log;
      for (i = 0; i < src.n; i++) {
        var t = col[i];
        if (log) { t = Math.log1p(Math.max(t, 0)); }
        if (!isFinite(t)) { continue; }
        out[i] = 1 + Math.round(Math.min(1, Math.max(0, (t - lo) / span)) * (LEVELS - 1));
      }
    }
    src.codes[this.id] = out;
    return out;
  },
  colorOf: function (src, i) {
    var code = this.codes(src)[i];
    return code ? this.palette[code - 1] : null;
  }
});

function div(cls, text) {
  var d = document.createElement('div');
  d.className = cls;
  if (text !== undefined) { d.textContent = text; }
  return d;
}
function formatValue(value) {
  return typeof value === 'number'
    ? (Number.isInteger(value) ? value.toLocaleString() : value.toPrecision(4))
    : String(value);
}
function thumb(uri) {
  var img = document.createElement('img');
  img.className = 'thumb';
  img.alt = '';
  img.src = uri;
  return img;
}

window.urbangeoRegions = function (map, D, ramps) {
  var schema = {};
  D.fields.forEach(function (f) { schema[f.key] = f; });
  var app = {map: map, D: D, schema: schema, loaded: {}, waiting: {}, failed: {},
             chunkSources: {}, layers: {}, mode: null, firstDraw: null, listeners: []};
  app.ramps = {seq: rampPalette(ramps.seq), div: rampPalette(ramps.div)};
  app.cellsSource = D.cells ? new Source(D.cells, schema, null) : null;
  app.blocksSource = D.blocks ? new Source(D.blocks, schema, null) : null;
  if (app.blocksSource) { app.blocksSource.blocks = true; }
  app.painter = new Painter(app, {pane: 'overlayPane'});
  if (D.view) {  // the first view at once (not a zoom animation from the default view)
    map.fitBounds(D.view.bounds, {animate: false, paddingBottomRight: D.view.padding});
  }
  var order = [];

  app.layer = function (spec) {
    var layer = new RegionLayer(app, spec);
    order.push(layer);
    app.layers[spec.name] = layer;
    return layer;
  };
  app.activate = function (layer, on) {
    var list = app.painter.active.filter(function (l) { return l !== layer; });
    if (on) { list.push(layer); }
    list.sort(function (a, b) { return order.indexOf(a) - order.indexOf(b); });
    app.painter.active = list;
    if (list.length && !map.hasLayer(app.painter)) { map.addLayer(app.painter); }
    else { app.painter.redraw(); }
    if (!on) { map.closeTooltip(app.tip); }
  };

  // What to draw in the view: the cells; in the aggregated view, the blocks until zoomed in
  // to cells of at least drill_px pixels over at most max_chunks chunks (loaded then).
  app.sources = function (view, S) {
    if (!app.blocksSource) { app.mode = 'cells'; return [app.cellsSource]; }
    var want = app.chunksIn(view);
    if (D.cell_size * S >= D.drill_px && want.length <= D.max_chunks) {
      var out = [], missing = [];
      want.forEach(function (c) {
        if (app.chunkSources[c]) { out.push(app.chunkSources[c]); } else { missing.push(c); }
      });
      if (!missing.length) { app.mode = 'cells'; return out; }
      missing.forEach(function (c) { app.cellChunk(c, function () { app.painter.redraw(); }); });
    }
    app.mode = 'blocks';
    return [app.blocksSource];
  };
  app.chunksIn = function (view) {
    var out = [];
    D.chunks.forEach(function (c, i) {
      if (c[2] >= view[0] && c[0] <= view[2] && c[3] >= view[1] && c[1] <= view[3]) { out.push(i); }
    });
    return out;
  };
  app.afterDraw = function () {
    if (app.firstDraw === null && !map._animatingZoom) { app.firstDraw = performance.now(); }
    var fns = app.listeners; app.listeners = [];
    fns.forEach(function (fn) { fn(); });
  };

  // Files beside the page, by <script> elements (fetch() cannot read file:// pages' folders).
  window.urbangeoChunk = function (kind, c, data) {
    var key = kind + '_' + c, fns = app.waiting[key] || [];
    app.loaded[key] = data;
    delete app.waiting[key];
    fns.forEach(function (fn) { fn(data); });
  };
  app.load = function (kind, c, fn) {
    var key = kind + '_' + c;
    if (key in app.loaded) { fn(app.loaded[key]); return; }
    if (app.failed[key]) { fn(null); return; }
    if (app.waiting[key]) { app.waiting[key].push(fn); return; }
    app.waiting[key] = [fn];
    var s = document.createElement('script');
    s.src = encodeURI(D.folder) + '/' + key + '.js';
    s.onerror = function () {
      var fns = app.waiting[key] || [];
      app.failed[key] = true;
      delete app.waiting[key];
      fns.forEach(function (f) { f(null); });
    };
    document.head.appendChild(s);
  };
  app.cellChunk = function (c, fn) {
    app.load('cells', c, function (data) {
      if (data && !app.chunkSources[c]) { app.chunkSources[c] = new Source(data, schema, c); }
      fn(app.chunkSources[c] || null);
    });
  };
  // (chunk, position in the chunk) of record i of src (cells only).
  app.locate = function (src, i) {
    if (src.chunk !== null) { return [src.chunk, i]; }
    if (!src.raw.chunk) { return null; }
    if (!src.local) {
      var chunk = new Uint32Array(decode(src.raw.chunk)), seen = {};
      var local = new Uint32Array(src.n);
      for (var k = 0; k < src.n; k++) {
        local[k] = seen[chunk[k]] = (seen[chunk[k]] || 0);
        seen[chunk[k]]++;
      }
      src.chunkOf = chunk; src.local = local;
    }
    return [src.chunkOf[i], src.local[i]];
  };
  // {caption, img} of record i now, or null and fn({...}) once its chunk has loaded.
  app.extra = function (src, i, fn) {
    if (src.blocks) { return {}; }
    if (src.raw.caption || src.raw.img) {
      return {caption: src.raw.caption ? src.raw.caption[i] : null,
              img: src.raw.img ? src.raw.img[i] : null};
    }
    if (!D.extra) { return {}; }
    var at = app.locate(src, i);
    if (!at) { return {}; }
    function pick(data) {
      if (!data) { return {missing: true}; }
      return {caption: data.caption ? data.caption[at[1]] : null,
              img: data.img ? data.img[at[1]] : null};
    }
    var key = 'captions_' + at[0];
    if (key in app.loaded) { return pick(app.loaded[key]); }
    app.load('captions', at[0], function (data) { if (fn) { fn(pick(data)); } });
    return null;
  };

  // A card: the region's image, values and caption (textContent only).
  app.card = function (src, i, fields, compact, changed) {
    var box = div(compact ? 'urbangeo-card compact' : 'urbangeo-card');
    var table = document.createElement('table');
    var rows = src.blocks ? [['_count', 'regions in the block (values: means)']].concat(
      fields.filter(function (f) { return f[0] !== 'region_id' && schema[f[0]].type === 'f'; }))
      : fields;
    rows.forEach(function (field) {
      var value = src.value(field[0], i);
      if (value === null || value === undefined || value === '') { return; }
      var row = table.insertRow(), th = document.createElement('th');
      th.textContent = field[1];
      row.appendChild(th);
      row.insertCell().textContent = formatValue(value);
    });
    box.appendChild(table);
    function fill(extra) {
      if (typeof extra.img === 'string' && extra.img.indexOf('data:image/') === 0) {
        box.insertBefore(thumb(extra.img), box.firstChild);
      }
      var old = box.querySelector('.caption, .pending');
      if (old) { box.removeChild(old); }
      var hint = box.querySelector('.hint');
      if (hint) { box.removeChild(hint); }
      if (extra.missing) {
        box.appendChild(div('pending',
                            'The caption is in ' + D.folder + '/, not found beside the page.'));
      } else if (extra.caption) {
        box.appendChild(div('caption', extra.caption));
        if (compact) { box.appendChild(div('hint', 'click for the whole caption')); }
      }
    }
    var extra = app.extra(src, i, function (later) { fill(later); if (changed) { changed(); } });
    if (extra) { fill(extra); } else { box.appendChild(div('pending', 'loading the caption…')); }
    return box;
  };

  // The region under a point: {src, i, layer} of the topmost layer shown that draws it.
  app.hitAt = function (latlng) {
    var p = map.project(latlng, 0), x = p.x / 256, y = p.y / 256;
    var sources = app.painter.shown || [], layers = app.painter.active;
    for (var s = 0; s < sources.length; s++) {
      var src = sources[s], r = src.hit(x, y);
      if (r < 0) { continue; }
      var i = src.rec(r);
      for (var l = layers.length - 1; l >= 0; l--) {
        if (!layers[l].only || layers[l].codes(src)[i]) {
          return {src: src, i: i, layer: layers[l]};
        }
      }
    }
    return null;
  };
  app.tip = L.tooltip({className: 'urbangeo-tip', direction: 'auto', offset: [12, 0]});
  // Mouse events straight from the DOM: the canvases of Leaflet's own layers above the
  // regions (points, roads) keep the map from seeing every move. Controls and popups stop
  // their clicks; a click a canvas marker took is marked stopped.
  var tipKey = null, container = map.getContainer(), mapPane = map.getPane('mapPane');
  function onMap(e) {
    return mapPane.contains(e.target) && !L.DomUtil.hasClass(e.target, 'leaflet-interactive');
  }
  function hideTip() { map.closeTooltip(app.tip); tipKey = null; }
  L.DomEvent.on(container, 'mousemove', function (e) {
    if (!onMap(e) || (map.dragging && map.dragging.moving()) || map._animatingZoom) { return; }
    var latlng = map.mouseEventToLatLng(e);
    var hit = app.painter.active.length ? app.hitAt(latlng) : null;
    if (!hit) { hideTip(); return; }
    var key = hit.layer.id + ':' + hit.src.ids[hit.i];
    app.tip.setLatLng(latlng);
    if (key !== tipKey || !map.hasLayer(app.tip)) {
      tipKey = key;
      app.tip.setContent(app.card(hit.src, hit.i, hit.layer.spec.tooltip, true, function () {
        if (map.hasLayer(app.tip)) { app.tip.update(); }
      }));
      map.openTooltip(app.tip);
    }
  });
  L.DomEvent.on(container, 'mouseleave', hideTip);
  L.DomEvent.on(container, 'click', function (e) {
    if (e._stopped || !onMap(e) || (map.dragging && map.dragging.moved())) { return; }
    var latlng = map.mouseEventToLatLng(e);
    var hit = app.painter.active.length ? app.hitAt(latlng) : null;
    if (!hit) { return; }
    var popup = L.popup({maxWidth: 340, maxHeight: 300, className: 'urbangeo-popup'});
    popup.setLatLng(latlng).setContent(app.card(hit.src, hit.i, hit.layer.spec.details, false,
      function () { if (map.hasLayer(popup)) { popup.update(); } }));
    hideTip();
    popup.openOn(map);
    map.fire('urbangeo:regionclick', {id: hit.src.ids[hit.i], layer: hit.layer.spec.name,
                                      blocks: !!hit.src.blocks});
  });

  // Where tests and benchmarks read the page's state.
  function find(id) {
    var srcs = [app.cellsSource].concat(Object.keys(app.chunkSources).map(function (c) {
      return app.chunkSources[c];
    }), [app.blocksSource]);
    for (var s = 0; s < srcs.length; s++) {
      if (!srcs[s]) { continue; }
      var i = srcs[s].index(id);
      if (i >= 0) { return {src: srcs[s], i: i}; }
    }
    return null;
  }
  // The client (x, y) of a point inside the region (a convex one): a third of the way from
  // its vertices' mean (where a street-view point may sit) to its first vertex.
  function centre(id) {
    var at = find(id);
    if (!at) { return null; }
    var r = at.src.rings(at.i)[0], st = at.src.start, ll = at.src.ll, lat = 0, lon = 0;
    for (var k = st[r]; k < st[r + 1]; k++) { lon += ll[2 * k]; lat += ll[2 * k + 1]; }
    var nv = st[r + 1] - st[r];
    lon = lon / nv + (ll[2 * st[r]] - lon / nv) / 3;
    lat = lat / nv + (ll[2 * st[r] + 1] - lat / nv) / 3;
    var p = map.latLngToContainerPoint([lat / 1e6, lon / 1e6]);
    var box = map.getContainer().getBoundingClientRect();
    return [box.left + p.x, box.top + p.y];
  }
  function mouse(type, id) {
    var xy = centre(id);
    if (!xy) { throw new Error('no region ' + id + ' on the page'); }
    var target = document.elementFromPoint(xy[0], xy[1]);
    target.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, view: window,
                                               clientX: xy[0], clientY: xy[1]}));
    return target;
  }
  function nextDraw() { return new Promise(function (ok) { app.listeners.push(ok); }); }
  window.urbangeo = {
    app: app,
    regions: D.n,
    layers: window.urbangeoLayers,
    mode: function () { return app.mode; },
    drawn: function () { return app.painter.drawn; },
    frames: function () { return app.painter.frames; },
    lastDrawMs: function () { return app.painter.lastMs; },
    firstDraw: function () { return app.firstDraw; },
    // Resolves once the first view is drawn and no zoom or draw is under way.
    ready: function () {
      return new Promise(function (ok) {
        (function check() {
          if (app.firstDraw !== null && !map._animatingZoom && !app.painter._pending) {
            ok(app.firstDraw);
          } else { setTimeout(check, 10); }
        })();
      });
    },
    nextDraw: nextDraw,
    // Shows region layer ``name`` alone (as the layer list would) and resolves after its draw
    // with the milliseconds it took.
    show: function (name) {
      var t0 = performance.now(), done = nextDraw();
      Object.keys(app.layers).forEach(function (other) {
        if (other !== name && map.hasLayer(app.layers[other])) {
          map.removeLayer(app.layers[other]);
        }
      });
      if (!map.hasLayer(app.layers[name])) { map.addLayer(app.layers[name]); }
      app.painter.redraw();
      return done.then(function () { return performance.now() - t0; });
    },
    colorOf: function (name, id) {
      var at = find(id);
      return at ? app.layers[name].colorOf(at.src, at.i) : null;
    },
    centre: centre,
    // [id, value of ``key``] of what is drawn at (lat, lon): a cell, or a block.
    valueAt: function (lat, lon, key) {
      var p = map.project([lat, lon], 0), srcs = app.painter.shown || [];
      for (var s = 0; s < srcs.length; s++) {
        var r = srcs[s].hit(p.x / 256, p.y / 256);
        if (r >= 0) { var i = srcs[s].rec(r); return [srcs[s].ids[i], srcs[s].value(key, i)]; }
      }
      return null;
    },
    hover: function (id) { return mouse('mousemove', id); },
    click: function (id) { return mouse('click', id); },
    // Sets the view and resolves after it is drawn.
    view: function (lat, lon, zoom) {
      var done = nextDraw();
      map.setView(lat === null ? map.getCenter() : [lat, lon], zoom, {animate: false});
      app.painter.redraw();
      return done;
    },
    zoomTo: function (id, zoom) {
      var at = find(id), done = nextDraw();
      map.setView(L.latLngBounds(at.src.bounds(at.i)).getCenter(), zoom, {animate: false});
      return done;
    },
    caption: function (id) {  // resolves with the region's caption (loading its chunk)
      var at = find(id);
      return new Promise(function (ok) {
        var now = app.extra(at.src, at.i, function (later) { ok(later.caption || null); });
        if (now) { ok(now.caption || null); }
      });
    },
    cellChunk: function (c) { return new Promise(function (ok) { app.cellChunk(c, ok); }); }
  };
  return app;
};

// The run's images on their regions: all at once when the page holds them, else those of
// the chunks in view once a cell is at least 24 pixels wide.
window.urbangeoImagery = function (app, spec) {
  var group = L.layerGroup(), map = app.map, done = {};
  function add(src, i, uri) {
    if (typeof uri === 'string' && uri.indexOf('data:image/') === 0) {
      L.imageOverlay(uri, src.bounds(i), {pane: spec.pane, interactive: false}).addTo(group);
    }
  }
  function update() {
    if (!map.hasLayer(group)) { return; }
    var cells = app.cellsSource;
    if (cells && cells.raw.img) {
      if (!done.all) {
        done.all = true;
        cells.raw.img.forEach(function (u, i) { add(cells, i, u); });
      }
      return;
    }
    var S = 256 * Math.pow(2, map.getZoom());
    if (app.D.cell_size * S < 24) { return; }
    var b = map.getPixelBounds();
    var view = [b.min.x / S, b.min.y / S, b.max.x / S, b.max.y / S];
    app.chunksIn(view).slice(0, 8).forEach(function (c) {
      if (done[c]) { return; }
      done[c] = true;
      app.load('captions', c, function (extra) {
        if (!extra || !extra.img) { return; }
        if (cells) {
          app.locate(cells, 0);
          for (var i = 0; i < cells.n; i++) {
            if (cells.chunkOf[i] === c) { add(cells, i, extra.img[cells.local[i]]); }
          }
        } else {
          app.cellChunk(c, function (src) {
            if (src) { extra.img.forEach(function (u, i) { add(src, i, u); }); }
          });
        }
      });
    });
  }
  group.on('add', update);
  map.on('moveend', update);
  return group;
};
})();

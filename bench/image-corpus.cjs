// The generated half of bench/image-corpus.sh's corpus, drawn with sharp (librsvg) from SVG so
// that no image of unclear origin is committed: photo-like scenes (feTurbulence texture, blur,
// grain), a UI and a terminal screenshot, a diagram, gradients, alpha icons and cut-outs with
// soft edges, a grayscale image and small images. Deterministic: fixed sizes, fixed turbulence
// seeds and a seeded PRNG; the text uses the DejaVu fonts (fontconfig picks another family when
// they are missing, which changes the text images: the bench prints each source's hash).
//
// Usage (NODE_PATH must reach the showcase's node_modules):
//   node image-corpus.cjs generate <dir>       writes the generated sources into <dir>
//   node image-corpus.cjs info <file>...       prints "<file>\t<upright width>\t<height>\t<channels>\t<sha256/12>"
const sharp = require('sharp')
const fs = require('fs')
const path = require('path')
const crypto = require('crypto')

// mulberry32: a small seeded PRNG, so that positions and colours are the same on every machine.
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const hsl = (h, s, l) => `hsl(${h.toFixed(1)},${s.toFixed(1)}%,${l.toFixed(1)}%)`
const svg = (w, h, body) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${body}</svg>`
const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const SANS = "font-family=\"DejaVu Sans, sans-serif\""
const MONO = "font-family=\"DejaVu Sans Mono, monospace\""
// Sensor-like grain: high-frequency noise, grey, mixed in softly.
const GRAIN = `<filter id="grain" x="0" y="0" width="100%" height="100%">
  <feTurbulence type="fractalNoise" baseFrequency="0.85" numOctaves="2" seed="11" result="n"/>
  <feColorMatrix in="n" type="matrix" values="0 0 0 0 0.5  0 0 0 0 0.5  0 0 0 0 0.5  1 0 0 0 -0.5" result="g"/>
  <feComponentTransfer in="g"><feFuncA type="linear" slope="0.45"/></feComponentTransfer>
</filter>`

// A landscape at dusk: sky gradient, turbulent clouds, lit rocky mountains, grassy foreground.
function landscape(w, h) {
  const r = prng(1)
  let ridge = `M0 ${h}`
  for (let x = 0; x <= w; x += w / 40) ridge += ` L${x.toFixed(1)} ${(h * (0.42 + 0.12 * Math.sin(x / w * 7.1) + 0.06 * r())).toFixed(1)}`
  ridge += ` L${w} ${(h * 0.5).toFixed(1)} L${w} ${h} Z`
  let hills = `M0 ${h}`
  for (let x = 0; x <= w; x += w / 24) hills += ` L${x.toFixed(1)} ${(h * (0.66 + 0.05 * Math.sin(x / w * 4.3 + 1) + 0.02 * r())).toFixed(1)}`
  hills += ` L${w} ${(h * 0.68).toFixed(1)} L${w} ${h} Z`
  let trees = ''
  for (let i = 0; i < 60; i++) {
    const x = r() * w, y = h * (0.7 + 0.25 * r()), s = 12 + 40 * r() * (y / h)
    trees += `<path d="M${x.toFixed(1)} ${(y - 2.6 * s).toFixed(1)} L${(x - s / 1.6).toFixed(1)} ${y.toFixed(1)} L${(x + s / 1.6).toFixed(1)} ${y.toFixed(1)} Z" fill="${hsl(120 + 30 * r(), 35 + 20 * r(), 12 + 10 * r())}"/>`
  }
  return svg(w, h, `<defs>
  <linearGradient id="sky" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#1d3b6e"/><stop offset="0.55" stop-color="#c96f5a"/><stop offset="0.75" stop-color="#f4c27a"/></linearGradient>
  <filter id="clouds" x="0" y="0" width="100%" height="100%">
    <feTurbulence type="fractalNoise" baseFrequency="0.0035 0.011" numOctaves="6" seed="3"/>
    <feColorMatrix type="matrix" values="0 0 0 0 1  0 0 0 0 0.92  0 0 0 0 0.88  2.2 0 0 0 -1.05"/>
  </filter>
  <filter id="rock" x="0" y="0" width="100%" height="100%">
    <feTurbulence type="turbulence" baseFrequency="0.012 0.03" numOctaves="6" seed="5" result="t"/>
    <feDiffuseLighting in="t" surfaceScale="7" lighting-color="#d9b8a0" result="l"><feDistantLight azimuth="200" elevation="35"/></feDiffuseLighting>
    <feComposite in="l" in2="SourceGraphic" operator="arithmetic" k1="1.1" k2="0" k3="0" k4="0"/>
    <feComposite in2="SourceGraphic" operator="in"/>
  </filter>
  <filter id="grass" x="0" y="0" width="100%" height="100%">
    <feTurbulence type="fractalNoise" baseFrequency="0.05 0.35" numOctaves="4" seed="7" result="t"/>
    <feColorMatrix in="t" type="matrix" values="0.35 0 0 0 0.04  0 0.55 0 0 0.1  0 0 0.2 0 0.02  0 0 0 0 1" result="c"/>
    <feComposite in="c" in2="SourceGraphic" operator="in"/>
  </filter>
  <filter id="haze"><feGaussianBlur stdDeviation="2.5"/></filter>
  ${GRAIN}
</defs>
<rect width="${w}" height="${h}" fill="url(#sky)"/>
<rect width="${w}" height="${h * 0.6}" filter="url(#clouds)"/>
<circle cx="${w * 0.72}" cy="${h * 0.47}" r="${h * 0.05}" fill="#ffe3a8" filter="url(#haze)"/>
<path d="${ridge}" fill="#7a6a72" filter="url(#rock)"/>
<path d="${hills}" fill="#3a5a2a" filter="url(#grass)"/>
${trees}
<rect width="${w}" height="${h}" filter="url(#grain)"/>`)
}

// Out-of-focus lights behind a textured, shaded sphere (a portrait-style photo with bokeh).
function bokeh(w, h) {
  const r = prng(2)
  let lights = ''
  for (let i = 0; i < 70; i++) {
    const rad = 20 + 70 * r()
    lights += `<circle cx="${(r() * w).toFixed(1)}" cy="${(r() * h).toFixed(1)}" r="${rad.toFixed(1)}" fill="${hsl(20 + 60 * r(), 70 + 30 * r(), 45 + 30 * r())}" fill-opacity="${(0.25 + 0.5 * r()).toFixed(2)}"/>`
  }
  const cx = w * 0.48, cy = h * 0.55, R = w * 0.3
  return svg(w, h, `<defs>
  <radialGradient id="bg" cx="0.3" cy="0.3" r="0.9"><stop offset="0" stop-color="#3b2a1a"/><stop offset="1" stop-color="#0c0a10"/></radialGradient>
  <filter id="blur" x="-10%" y="-10%" width="120%" height="120%"><feGaussianBlur stdDeviation="14"/></filter>
  <radialGradient id="shade" cx="0.35" cy="0.3" r="0.75"><stop offset="0" stop-color="#ffd0a0"/><stop offset="0.6" stop-color="#c0502a"/><stop offset="1" stop-color="#401008"/></radialGradient>
  <filter id="skin" x="0" y="0" width="100%" height="100%">
    <feTurbulence type="turbulence" baseFrequency="0.04" numOctaves="5" seed="9" result="t"/>
    <feDisplacementMap in="SourceGraphic" in2="t" scale="6" xChannelSelector="R" yChannelSelector="G" result="d"/>
    <feTurbulence type="fractalNoise" baseFrequency="0.3" numOctaves="3" seed="13" result="f"/>
    <feColorMatrix in="f" type="matrix" values="0 0 0 0 0  0 0 0 0 0  0 0 0 0 0  0 0 0 0.6 -0.2" result="dots"/>
    <feComposite in="dots" in2="d" operator="atop"/>
  </filter>
  <filter id="soft"><feGaussianBlur stdDeviation="1.2"/></filter>
  ${GRAIN}
</defs>
<rect width="${w}" height="${h}" fill="url(#bg)"/>
<g filter="url(#blur)">${lights}</g>
<ellipse cx="${cx}" cy="${cy + R * 0.95}" rx="${R * 0.9}" ry="${R * 0.12}" fill="#000" fill-opacity="0.5" filter="url(#blur)"/>
<g filter="url(#skin)"><circle cx="${cx}" cy="${cy}" r="${R}" fill="url(#shade)"/></g>
<path d="M${cx - 8} ${cy - R + 4} q 10 -${R * 0.25} 40 -${R * 0.3}" stroke="#2d4a10" stroke-width="10" fill="none" stroke-linecap="round" filter="url(#soft)"/>
<rect width="${w}" height="${h}" filter="url(#grain)"/>`)
}

// Relief of stone (rendered in colour; saved as a one-channel grayscale JPEG).
function stone(w, h) {
  return svg(w, h, `<defs>
  <filter id="relief" x="0" y="0" width="100%" height="100%">
    <feTurbulence type="fractalNoise" baseFrequency="0.008" numOctaves="7" seed="17" result="t"/>
    <feDiffuseLighting in="t" surfaceScale="14" lighting-color="#fff" result="l"><feDistantLight azimuth="45" elevation="40"/></feDiffuseLighting>
    <feTurbulence type="turbulence" baseFrequency="0.06" numOctaves="3" seed="19" result="c"/>
    <feColorMatrix in="c" type="luminanceToAlpha" result="ca"/>
    <feComposite in="l" in2="ca" operator="arithmetic" k1="0" k2="1.5" k3="-0.6" k4="-0.35"/>
  </filter>
  ${GRAIN}
</defs>
<rect width="${w}" height="${h}" fill="#888" filter="url(#relief)"/>
<rect width="${w}" height="${h}" filter="url(#grain)"/>`)
}

// A web app's dashboard: sidebar, top bar, cards with shadows, a table, a chart, buttons.
function ui(w, h) {
  const r = prng(4)
  const nav = ['Overview', 'Deployments', 'Analytics', 'Logs', 'Storage', 'Domains', 'Settings', 'Members', 'Billing']
  let side = `<rect width="232" height="${h}" fill="#f6f7f9"/><rect x="231" width="1" height="${h}" fill="#e3e5e8"/>
  <circle cx="36" cy="34" r="14" fill="#4f46e5"/><text x="60" y="40" ${SANS} font-size="17" font-weight="bold" fill="#111">Acme Cloud</text>`
  nav.forEach((n, i) => {
    const y = 96 + i * 38
    if (i === 1) side += `<rect x="12" y="${y - 24}" width="208" height="34" rx="6" fill="#e8e7fd"/>`
    side += `<rect x="28" y="${y - 14}" width="14" height="14" rx="3" fill="${i === 1 ? '#4f46e5' : '#9aa0a9'}"/><text x="54" y="${y - 2}" ${SANS} font-size="14" fill="${i === 1 ? '#3730a3' : '#3c4149'}">${n}</text>`
  })
  let top = `<rect x="232" width="${w - 232}" height="64" fill="#fff"/><rect x="232" y="63" width="${w - 232}" height="1" fill="#e3e5e8"/>
  <rect x="260" y="16" width="360" height="32" rx="8" fill="#f1f2f4" stroke="#dfe1e5"/><text x="276" y="37" ${SANS} font-size="13" fill="#8a9099">Search projects, deployments…  ⌘K</text>
  <rect x="${w - 190}" y="16" width="110" height="32" rx="8" fill="#4f46e5"/><text x="${w - 171}" y="37" ${SANS} font-size="13" font-weight="bold" fill="#fff">New project</text>
  <circle cx="${w - 44}" cy="32" r="16" fill="url(#avatar)"/>`
  let main = `<rect x="232" y="64" width="${w - 232}" height="${h - 64}" fill="#fbfbfc"/>
  <text x="264" y="112" ${SANS} font-size="24" font-weight="bold" fill="#111">Deployments</text>
  <text x="264" y="136" ${SANS} font-size="13" fill="#6b7280">Every push to main is built and deployed to production automatically.</text>`
  const stats = [['Requests', '1.28M', '+12.4%'], ['Cold starts', '3,412', '−8.1%'], ['p95 latency', '182 ms', '−3.0%'], ['Errors', '0.04%', '+0.01%']]
  const cw = (w - 232 - 64 - 3 * 20) / 4
  stats.forEach(([k, v, d], i) => {
    const x = 264 + i * (cw + 20)
    main += `<rect x="${x}" y="160" width="${cw}" height="104" rx="10" fill="#000" fill-opacity="0.18" filter="url(#shadow)"/>
    <rect x="${x}" y="160" width="${cw}" height="104" rx="10" fill="#fff" stroke="#e6e8eb"/>
    <text x="${x + 20}" y="190" ${SANS} font-size="13" fill="#6b7280">${k}</text>
    <text x="${x + 20}" y="228" ${SANS} font-size="28" font-weight="bold" fill="#111">${esc(v)}</text>
    <text x="${x + 20}" y="250" ${SANS} font-size="12" fill="${d.startsWith('+') ? '#15803d' : '#b91c1c'}">${d} vs last week</text>`
  })
  // chart card
  const cx0 = 264, cy0 = 290, cW = (w - 232 - 64) * 0.58, cH = 260
  main += `<rect x="${cx0}" y="${cy0}" width="${cW}" height="${cH}" rx="10" fill="#fff" stroke="#e6e8eb"/>
  <text x="${cx0 + 20}" y="${cy0 + 30}" ${SANS} font-size="15" font-weight="bold" fill="#111">Requests per minute</text>`
  for (let g = 0; g < 5; g++) main += `<rect x="${cx0 + 50}" y="${cy0 + 60 + g * 40}" width="${cW - 70}" height="1" fill="#eef0f2"/><text x="${cx0 + 14}" y="${cy0 + 64 + g * 40}" ${SANS} font-size="11" fill="#9aa0a9">${(4 - g) * 250}</text>`
  let line = '', area = ''
  let v = 0.5
  for (let i = 0; i <= 60; i++) {
    v = Math.min(0.95, Math.max(0.1, v + (r() - 0.5) * 0.16))
    const x = cx0 + 50 + (cW - 70) * i / 60, y = cy0 + 220 - v * 160
    line += `${i ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `
  }
  area = `${line} L${cx0 + cW - 20} ${cy0 + 220} L${cx0 + 50} ${cy0 + 220} Z`
  main += `<path d="${area}" fill="url(#area)"/><path d="${line}" fill="none" stroke="#4f46e5" stroke-width="2"/>`
  // activity list
  const lx = cx0 + cW + 20, lw = w - 32 - lx
  main += `<rect x="${lx}" y="${cy0}" width="${lw}" height="${cH}" rx="10" fill="#fff" stroke="#e6e8eb"/>
  <text x="${lx + 20}" y="${cy0 + 30}" ${SANS} font-size="15" font-weight="bold" fill="#111">Activity</text>`
  const who = ['maria', 'deploy-bot', 'kenji', 'ola', 'sam']
  for (let i = 0; i < 5; i++) {
    const y = cy0 + 64 + i * 40
    main += `<circle cx="${lx + 34}" cy="${y}" r="12" fill="${hsl(360 * r(), 60, 60)}"/><text x="${lx + 56}" y="${y - 2}" ${SANS} font-size="13" fill="#111">${who[i]} promoted <tspan font-weight="bold">#${4120 + i * 7}</tspan></text><text x="${lx + 56}" y="${y + 14}" ${SANS} font-size="11" fill="#8a9099">${i * 7 + 2} minutes ago</text>`
  }
  // table
  const ty = cy0 + cH + 24, tW = w - 232 - 64
  main += `<rect x="264" y="${ty}" width="${tW}" height="${h - ty - 24}" rx="10" fill="#fff" stroke="#e6e8eb"/>`
  const cols = [['Deployment', 0], ['Branch', 0.26], ['Status', 0.45], ['Duration', 0.6], ['Author', 0.74], ['Created', 0.88]]
  cols.forEach(([c, f]) => { main += `<text x="${284 + f * (tW - 40)}" y="${ty + 30}" ${SANS} font-size="12" font-weight="bold" fill="#6b7280">${c.toUpperCase()}</text>` })
  const st = [['Ready', '#15803d', '#dcfce7'], ['Building', '#a16207', '#fef9c3'], ['Error', '#b91c1c', '#fee2e2']]
  for (let i = 0; ty + 70 + i * 36 < h - 30; i++) {
    const y = ty + 66 + i * 36
    const s = st[i % 7 === 3 ? 2 : i === 0 ? 1 : 0]
    main += `<rect x="264" y="${y - 22}" width="${tW}" height="1" fill="#eef0f2"/>
    <text x="284" y="${y}" ${MONO} font-size="13" fill="#111">acme-web-${(0x9f3a1 + i * 7919).toString(16)}</text>
    <text x="${284 + 0.26 * (tW - 40)}" y="${y}" ${SANS} font-size="13" fill="#3c4149">${['main', 'feat/images', 'fix/cache', 'main'][i % 4]}</text>
    <rect x="${280 + 0.45 * (tW - 40)}" y="${y - 15}" width="74" height="22" rx="11" fill="${s[2]}"/><text x="${292 + 0.45 * (tW - 40)}" y="${y}" ${SANS} font-size="12" fill="${s[1]}">${s[0]}</text>
    <text x="${284 + 0.6 * (tW - 40)}" y="${y}" ${SANS} font-size="13" fill="#3c4149">${(20 + r() * 90).toFixed(0)}s</text>
    <text x="${284 + 0.74 * (tW - 40)}" y="${y}" ${SANS} font-size="13" fill="#3c4149">${who[i % 5]}</text>
    <text x="${284 + 0.88 * (tW - 40)}" y="${y}" ${SANS} font-size="13" fill="#8a9099">${i + 1}h ago</text>`
  }
  return svg(w, h, `<defs>
  <filter id="shadow" x="-20%" y="-20%" width="140%" height="160%"><feGaussianBlur stdDeviation="6"/><feOffset dy="3"/></filter>
  <linearGradient id="area" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#4f46e5" stop-opacity="0.35"/><stop offset="1" stop-color="#4f46e5" stop-opacity="0"/></linearGradient>
  <linearGradient id="avatar" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#f59e0b"/><stop offset="1" stop-color="#db2777"/></linearGradient>
</defs>${side}${top}${main}`)
}

// A dark terminal window with coloured build output.
function terminal(w, h) {
  const lines = [
    [['#8ae234', '$ '], ['#eeeeec', 'cargo build --release -p ferry-cli']],
    [['#8ae234', '   Compiling'], ['#eeeeec', ' libc v0.2.177']],
    [['#8ae234', '   Compiling'], ['#eeeeec', ' proc-macro2 v1.0.101']],
    [['#8ae234', '   Compiling'], ['#eeeeec', ' mozjpeg-sys v2.2.3']],
    [['#8ae234', '   Compiling'], ['#eeeeec', ' libwebp-sys v0.14.0']],
    [['#fce94f', 'warning'], ['#eeeeec', ': unused variable: `shrink`']],
    [['#729fcf', '   --> '], ['#eeeeec', 'crates/ferry-image/src/transform.rs:214:9']],
    [['#729fcf', '    |']],
    [['#729fcf', '214 | '], ['#eeeeec', '    let shrink = jpeg_shrink(width, target);']],
    [['#729fcf', '    |         '], ['#fce94f', '^^^^^^ help: prefix it with an underscore: `_shrink`']],
    [['#729fcf', '    |']],
    [['#8ae234', '   Compiling'], ['#eeeeec', ' ferry-image v0.1.0 (/work/main/crates/ferry-image)']],
    [['#8ae234', '   Compiling'], ['#eeeeec', ' ferry-server v0.1.0 (/work/main/crates/ferry-server)']],
    [['#8ae234', '    Finished'], ['#eeeeec', ' `release` profile [optimized] target(s) in 1m 52s']],
    [['#8ae234', '$ '], ['#eeeeec', 'ls -la target/release']],
    [['#eeeeec', 'total 48216']],
    [['#eeeeec', 'drwxr-xr-x  7 dev dev     4096 Nov 22 06:15 '], ['#729fcf', '.']],
    [['#eeeeec', 'drwxr-xr-x  5 dev dev     4096 Nov 22 05:02 '], ['#729fcf', '..']],
    [['#eeeeec', '-rwxr-xr-x  2 dev dev 24871352 Nov 22 06:15 '], ['#8ae234', 'ferry']],
    [['#eeeeec', 'drwxr-xr-x 41 dev dev     4096 Nov 22 06:15 '], ['#729fcf', 'build']],
    [['#eeeeec', 'drwxr-xr-x  2 dev dev    20480 Nov 22 06:15 '], ['#729fcf', 'deps']],
    [['#8ae234', '$ '], ['#eeeeec', 'ferry start -p 3000']],
    [['#34e2e2', ' INFO'], ['#eeeeec', ' ferry_server: listening on http://0.0.0.0:3000 (4 workers)']],
    [['#34e2e2', ' INFO'], ['#eeeeec', ' ferry_image: GET /_next/image?url=%2Fhero.jpg&w=1080&q=75 200 MISS 41ms']],
    [['#ef2929', 'ERROR'], ['#eeeeec', ' ferry_workers: worker 2 exited (signal 9), restarting']],
    [['#8ae234', '$ '], ['#eeeeec', '█']],
  ]
  let t = ''
  lines.forEach((segs, i) => {
    t += `<text x="20" y="${64 + i * 21}" ${MONO} font-size="14" xml:space="preserve">`
    for (const [c, s] of segs) t += `<tspan fill="${c}">${esc(s)}</tspan>`
    t += '</text>'
  })
  return svg(w, h, `<rect width="${w}" height="${h}" fill="#2e3436"/>
<rect width="${w}" height="34" fill="#3c3f41"/>
<circle cx="20" cy="17" r="6.5" fill="#ff5f57"/><circle cx="42" cy="17" r="6.5" fill="#febc2e"/><circle cx="64" cy="17" r="6.5" fill="#28c840"/>
<text x="${w / 2}" y="22" ${SANS} font-size="13" fill="#c8c8c8" text-anchor="middle">dev@build: ~/ferry</text>
<rect y="34" width="${w}" height="${h - 34}" fill="#1e1e1e"/>${t}`)
}

// A box-and-arrow architecture diagram: thin strokes, labels, dashed lines, few flat colours.
function diagram(w, h) {
  const box = (x, y, bw, bh, label, sub, fill) => `<rect x="${x}" y="${y}" width="${bw}" height="${bh}" rx="8" fill="${fill}" stroke="#334155" stroke-width="1.5"/>
  <text x="${x + bw / 2}" y="${y + bh / 2 - (sub ? 4 : -5)}" ${SANS} font-size="16" font-weight="bold" fill="#0f172a" text-anchor="middle">${label}</text>${sub ? `<text x="${x + bw / 2}" y="${y + bh / 2 + 16}" ${SANS} font-size="12" fill="#475569" text-anchor="middle">${sub}</text>` : ''}`
  const arrow = (x1, y1, x2, y2, label, dash) => `<path d="M${x1} ${y1} L${x2} ${y2}" stroke="#334155" stroke-width="1.5" fill="none" marker-end="url(#ah)"${dash ? ' stroke-dasharray="6 4"' : ''}/>${label ? `<text x="${(x1 + x2) / 2 + 6}" y="${(y1 + y2) / 2 - 6}" ${SANS} font-size="12" fill="#334155">${label}</text>` : ''}`
  let b = `<rect width="${w}" height="${h}" fill="#fff"/>
  <text x="40" y="50" ${SANS} font-size="22" font-weight="bold" fill="#0f172a">Request pipeline</text>
  <rect x="360" y="110" width="880" height="560" rx="14" fill="none" stroke="#94a3b8" stroke-width="1" stroke-dasharray="4 4"/>
  <text x="380" y="136" ${SANS} font-size="13" fill="#64748b">ferry start (one process)</text>`
  b += box(60, 300, 200, 80, 'Client', 'browser / CDN', '#f1f5f9')
  b += box(420, 170, 220, 80, 'Guard', 'strip internal headers', '#e0f2fe')
  b += box(420, 330, 220, 80, 'Router', 'Next.js phases', '#e0f2fe')
  b += box(420, 500, 220, 80, 'Static files', 'ETag, Range, br/gzip', '#dcfce7')
  b += box(760, 170, 220, 80, 'Image optimizer', 'decode, resize, encode', '#fef3c7')
  b += box(760, 330, 220, 80, 'Prerender cache', 'ISR, tags', '#dcfce7')
  b += box(760, 500, 220, 80, 'Worker pool', 'Node.js, Unix sockets', '#fae8ff')
  b += box(1340, 250, 200, 80, 'Redis', 'shared cache', '#fee2e2')
  b += box(1340, 470, 200, 80, 'Disk', '.ferry-cache/', '#f1f5f9')
  b += arrow(260, 340, 418, 210, 'HTTP/1.1, h2c')
  b += arrow(530, 250, 530, 328)
  b += arrow(530, 410, 530, 498, 'file')
  b += arrow(640, 370, 758, 370, 'page')
  b += arrow(640, 350, 758, 215, '/_next/image')
  b += arrow(640, 390, 758, 540, 'function')
  b += arrow(980, 210, 1338, 280, 'entries', true)
  b += arrow(980, 370, 1338, 300, '', true)
  b += arrow(980, 390, 1338, 500, 'evicted LRU', true)
  b += `<g transform="translate(60 760)">`
  const leg = [['#e0f2fe', 'Rust, per request'], ['#dcfce7', 'cached answers'], ['#fef3c7', 'CPU-bound'], ['#fae8ff', 'JavaScript'], ['#fee2e2', 'optional']]
  leg.forEach(([c, l], i) => { b += `<rect x="${i * 230}" y="0" width="22" height="16" rx="3" fill="${c}" stroke="#334155"/><text x="${i * 230 + 32}" y="13" ${SANS} font-size="13" fill="#334155">${l}</text>` })
  b += `</g>`
  // A grid of thin lines and a curve: line art.
  b += `<g stroke="#cbd5e1" stroke-width="1">`
  for (let x = 60; x <= 1540; x += 40) b += `<line x1="${x}" y1="830" x2="${x}" y2="${h - 40}"/>`
  for (let y = 830; y <= h - 40; y += 40) b += `<line x1="60" y1="${y}" x2="1540" y2="${y}"/>`
  b += `</g><path d="M60 ${h - 40} C 400 ${h - 40}, 500 840, 800 860 S 1300 ${h - 60}, 1540 850" stroke="#dc2626" stroke-width="2" fill="none"/>`
  return svg(w, h, `<defs><marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="#334155"/></marker></defs>${b}`)
}

// Smooth gradients only (banding and chroma stress), as in a website's hero background.
function gradient(w, h) {
  return svg(w, h, `<defs>
  <linearGradient id="a" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#0f172a"/><stop offset="0.5" stop-color="#4338ca"/><stop offset="1" stop-color="#db2777"/></linearGradient>
  <radialGradient id="b" cx="0.75" cy="0.25" r="0.55"><stop offset="0" stop-color="#f59e0b" stop-opacity="0.85"/><stop offset="1" stop-color="#f59e0b" stop-opacity="0"/></radialGradient>
  <radialGradient id="c" cx="0.2" cy="0.85" r="0.6"><stop offset="0" stop-color="#06b6d4" stop-opacity="0.7"/><stop offset="1" stop-color="#06b6d4" stop-opacity="0"/></radialGradient>
  <linearGradient id="d" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#fff" stop-opacity="0"/><stop offset="1" stop-color="#fff" stop-opacity="0.12"/></linearGradient>
</defs>
<rect width="${w}" height="${h}" fill="url(#a)"/><rect width="${w}" height="${h}" fill="url(#b)"/>
<rect width="${w}" height="${h}" fill="url(#c)"/><rect width="${w}" height="${h}" fill="url(#d)"/>`)
}

// An app icon on a transparent background: flat rounded square, white glyph, soft drop shadow.
function icon(s) {
  const k = s / 512
  return svg(s, s, `<defs><filter id="sh" x="-20%" y="-20%" width="140%" height="140%"><feGaussianBlur stdDeviation="${14 * k}"/><feOffset dy="${10 * k}"/></filter></defs>
<g transform="scale(${k})">
<rect x="56" y="56" width="400" height="400" rx="90" fill="#000" fill-opacity="0.45" filter="url(#sh)"/>
<rect x="56" y="56" width="400" height="400" rx="90" fill="#0ea5e9"/>
<path d="M56 300 Q 256 230 456 300 L456 366 Q456 456 366 456 L146 456 Q56 456 56 366 Z" fill="#0369a1"/>
<path d="M150 300 L256 130 L362 300 Z" fill="#fff"/><rect x="246" y="300" width="20" height="60" fill="#fff"/>
<path d="M130 360 Q 193 390 256 360 T 382 360" stroke="#fff" stroke-width="16" fill="none" stroke-linecap="round"/>
</g>`)
}

// A small UI icon (check mark in a circle), anti-aliased edges on transparency.
function smallIcon(s) {
  return svg(s, s, `<g transform="scale(${s / 48})"><circle cx="24" cy="24" r="21" fill="#16a34a"/><circle cx="24" cy="24" r="21" fill="none" stroke="#14532d" stroke-opacity="0.4" stroke-width="1.5"/>
<path d="M14 25 L21 32 L35 17" stroke="#fff" stroke-width="4.5" fill="none" stroke-linecap="round" stroke-linejoin="round"/></g>`)
}

// A photographed object cut out of its background: textured, shaded blob with a feathered alpha
// edge and a soft half-transparent shadow.
function cutout(w, h) {
  const r = prng(6)
  let d = ''
  const cx = w * 0.5, cy = h * 0.46, R = w * 0.33
  for (let i = 0; i <= 48; i++) {
    const a = i / 48 * 2 * Math.PI, rr = R * (1 + 0.12 * Math.sin(3 * a) + 0.05 * (r() - 0.5))
    d += `${i ? 'L' : 'M'}${(cx + rr * Math.cos(a)).toFixed(1)} ${(cy + 0.8 * rr * Math.sin(a)).toFixed(1)} `
  }
  return svg(w, h, `<defs>
  <radialGradient id="lit" cx="0.38" cy="0.3" r="0.8"><stop offset="0" stop-color="#e8f0a0"/><stop offset="0.55" stop-color="#7a9a30"/><stop offset="1" stop-color="#1e2a08"/></radialGradient>
  <filter id="tex" x="0" y="0" width="100%" height="100%">
    <feTurbulence type="turbulence" baseFrequency="0.025 0.05" numOctaves="5" seed="23" result="t"/>
    <feDiffuseLighting in="t" surfaceScale="4" lighting-color="#fff" result="l"><feDistantLight azimuth="225" elevation="55"/></feDiffuseLighting>
    <feComposite in="SourceGraphic" in2="l" operator="arithmetic" k1="1.15" k2="0" k3="0" k4="0" result="m"/>
    <feComposite in="m" in2="SourceAlpha" operator="in" result="c"/>
    <feGaussianBlur in="SourceAlpha" stdDeviation="5" result="edge"/>
    <feComposite in="c" in2="edge" operator="in"/>
  </filter>
  <filter id="shadow" x="-30%" y="-30%" width="160%" height="200%"><feGaussianBlur stdDeviation="22"/></filter>
</defs>
<ellipse cx="${cx + 30}" cy="${cy + R * 0.9}" rx="${R * 0.95}" ry="${R * 0.18}" fill="#000" fill-opacity="0.45" filter="url(#shadow)"/>
<path d="${d}Z" fill="url(#lit)" filter="url(#tex)"/>`)
}

const GEN = [
  // name, width, height, svg, how the rendered pixels are saved
  ['landscape.jpg', 1600, 1067, landscape, (i) => i.jpeg({ quality: 90 })],
  ['bokeh.webp', 1200, 1500, bokeh, (i) => i.webp({ quality: 85 })],
  ['stone-gray.jpg', 1024, 768, stone, (i) => i.toColourspace('b-w').jpeg({ quality: 90 })],
  ['ui.png', 1440, 900, ui, (i) => i.flatten({ background: '#ffffff' }).png()],
  ['terminal.png', 1200, 620, terminal, (i) => i.flatten({ background: '#000000' }).png()],
  ['diagram.png', 1600, 1000, diagram, (i) => i.flatten({ background: '#ffffff' }).png({ palette: true, colours: 256, dither: 0 })],
  ['gradient.png', 1920, 1080, gradient, (i) => i.flatten({ background: '#000000' }).png()],
  ['icon.png', 512, 512, (w) => icon(w), (i) => i.png()],
  ['cutout.png', 900, 900, cutout, (i) => i.png()],
  ['icon-48.png', 48, 48, (w) => smallIcon(w), (i) => i.png()],
]

async function generate(dir) {
  fs.mkdirSync(dir, { recursive: true })
  for (const [name, w, h, draw, save] of GEN) {
    const file = path.join(dir, name)
    await save(sharp(Buffer.from(draw(w, h)), { density: 72 })).toFile(file)
  }
  // A thumbnail-sized photo: the landscape at 96 px, as a site's own small JPEG.
  await sharp(path.join(dir, 'landscape.jpg')).resize(96).jpeg({ quality: 85 }).toFile(path.join(dir, 'thumb-96.jpg'))
}

async function info(files) {
  for (const f of files) {
    const m = await sharp(f).metadata()
    const swap = (m.orientation || 1) >= 5
    const hash = crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex').slice(0, 12)
    console.log([f, swap ? m.height : m.width, swap ? m.width : m.height, m.channels, hash].join('\t'))
  }
}

;(async () => {
  const [cmd, ...args] = process.argv.slice(2)
  if (cmd === 'generate' && args.length === 1) return generate(args[0])
  if (cmd === 'info' && args.length) return info(args)
  throw new Error('usage: image-corpus.cjs generate <dir> | info <file>...')
})().catch((e) => { console.error(e.message || e); process.exit(1) })

// sharp's side of bench/image.sh: next's optimizeImage settings for each output type, then SSIM
// of sharp's and Ferry's outputs against a lossless resize (luma, 8x8 windows).
// Usage: node image-sharp.cjs <input> <out-dir> <width> <quality> [repeats]  (NODE_PATH must
// reach the showcase's node_modules). Prints a markdown table row per type.
const sharp = require('sharp')
const fs = require('fs')
const [input, out, w, q, reps = '5'] = process.argv.slice(2)
const width = Number(w), quality = Number(q)

function encode(img, type) {
  if (type === 'webp') return img.webp({ quality })
  if (type === 'png') return img.png({ quality })
  // next's transform.js: AVIF quality scaled "to match webp", effort 3 (sharp's default
  // chromaSubsampling for AVIF is 4:4:4, 8-bit).
  if (type === 'avif') return img.avif({ quality: Math.max(Math.round(quality * (50 / 80)), 1), effort: 3 })
  return img.jpeg({ quality, mozjpeg: true })
}

async function luma(buf, W, H) {
  const { data, info } = await sharp(buf).flatten({ background: '#ffffff' }).resize(W, H, { fit: 'fill' })
    .removeAlpha().raw().toBuffer({ resolveWithObject: true })
  const y = new Float64Array(info.width * info.height)
  for (let i = 0; i < y.length; i++) y[i] = 0.299 * data[3 * i] + 0.587 * data[3 * i + 1] + 0.114 * data[3 * i + 2]
  return y
}

function ssim(a, b, W, H) {
  const C1 = (0.01 * 255) ** 2, C2 = (0.03 * 255) ** 2
  let total = 0, n = 0
  for (let by = 0; by + 8 <= H; by += 4) for (let bx = 0; bx + 8 <= W; bx += 4) {
    let ma = 0, mb = 0
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) { const i = (by + y) * W + bx + x; ma += a[i]; mb += b[i] }
    ma /= 64; mb /= 64
    let va = 0, vb = 0, cov = 0
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) {
      const i = (by + y) * W + bx + x; const da = a[i] - ma, db = b[i] - mb
      va += da * da; vb += db * db; cov += da * db
    }
    va /= 63; vb /= 63; cov /= 63
    total += ((2 * ma * mb + C1) * (2 * cov + C2)) / ((ma * ma + mb * mb + C1) * (va + vb + C2)); n++
  }
  return total / n
}

;(async () => {
  const src = fs.readFileSync(input)
  sharp.concurrency(1)
  const ref = await sharp(src).rotate().resize(width, undefined, { withoutEnlargement: true }).png().toBuffer()
  const meta = await sharp(ref).metadata()
  const W = meta.width, H = meta.height
  const refY = await luma(ref, W, H)
  for (const type of (process.env.TYPES || 'jpeg,png,webp,avif').split(',')) {
    const times = []
    let buf
    for (let i = 0; i < Number(reps); i++) {
      const t = process.hrtime.bigint()
      buf = await encode(sharp(src, { limitInputPixels: 268402689 }).rotate().resize(width, undefined, { withoutEnlargement: true }), type).toBuffer()
      times.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
    times.sort((x, y) => x - y)
    fs.writeFileSync(`${out}/sharp.${type}`, buf)
    const ferry = fs.readFileSync(`${out}/ferry.${type}`)
    const s1 = ssim(refY, await luma(buf, W, H), W, H)
    const s2 = ssim(refY, await luma(ferry, W, H), W, H)
    const fm = JSON.parse(process.env.FERRY_MS || '{}')[type]
    console.log(`| ${input.split('/').pop()} | ${type} | ${buf.length} | ${ferry.length} | ${((ferry.length / buf.length - 1) * 100).toFixed(1)} % | ${s1.toFixed(4)} | ${s2.toFixed(4)} | ${times[times.length >> 1].toFixed(1)} | ${fm ?? 'n/a'} |`)
  }
})().catch((e) => { console.error(e); process.exit(1) })

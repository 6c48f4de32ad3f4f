// On-demand revalidation from the pages router: regenerates a prerendered page now.
export default async function handler(req, res) {
  const path = typeof req.query.path === 'string' ? req.query.path : '/legacy/static'
  try {
    await res.revalidate(path)
    res.status(200).json({ revalidated: true, path })
  } catch (err) {
    res.status(500).json({ revalidated: false, error: String(err && err.message) })
  }
}

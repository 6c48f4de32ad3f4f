export default function handler(req, res) {
  res.status(200).json({ router: 'pages', method: req.method, query: req.query })
}

/** @type {import('next').NextConfig} */
const nextConfig = {
  async redirects() {
    return [
      { source: '/old-blog/:slug', destination: '/blog/:slug', permanent: true },
      { source: '/temp-redirect', destination: '/', permanent: false },
      {
        source: '/beta',
        has: [{ type: 'cookie', key: 'beta', value: 'yes' }],
        destination: '/ssr?beta=1',
        permanent: false,
      },
    ]
  },
  async rewrites() {
    return {
      beforeFiles: [{ source: '/docs/:path*', destination: '/blog/:path*' }],
      afterFiles: [{ source: '/hello-rewrite', destination: '/api/hello' }],
      fallback: [{ source: '/fallback/:rest*', destination: '/' }],
    }
  },
  async headers() {
    return [
      { source: '/:path*', headers: [{ key: 'x-powered-by-ferry-example', value: 'yes' }] },
      {
        source: '/ssr',
        has: [{ type: 'query', key: 'debug' }],
        headers: [{ key: 'x-debug', value: 'on' }],
      },
    ]
  },
}

export default nextConfig

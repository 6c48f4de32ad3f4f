import { NextResponse } from 'next/server'

export function proxy(request) {
  const { pathname } = request.nextUrl
  if (pathname === '/proxy-redirect') {
    return NextResponse.redirect(new URL('/', request.url))
  }
  if (pathname === '/proxy-rewrite') {
    return NextResponse.rewrite(new URL('/ssr', request.url))
  }
  const response = NextResponse.next()
  response.headers.set('x-ferry-proxy', 'seen')
  return response
}

export const config = {
  matcher: ['/ssr', '/proxy-redirect', '/proxy-rewrite', '/blog/:path*', '/api/:path*'],
}

import { NextResponse } from 'next/server'

export function proxy(request) {
  const { pathname } = request.nextUrl
  if (pathname === '/proxy-redirect') {
    return NextResponse.redirect(new URL('/', request.url))
  }
  if (pathname === '/proxy-rewrite') {
    return NextResponse.rewrite(new URL('/ssr', request.url))
  }
  // `?greet=` hands the page an extra request header (its own trip to the page in Ferry).
  const greet = request.nextUrl.searchParams.get('greet')
  const headers = new Headers(request.headers)
  if (greet) headers.set('x-greeting', greet)
  const response = greet ? NextResponse.next({ request: { headers } }) : NextResponse.next()
  // next start also sets the proxy's response headers on the request the page sees.
  response.headers.set('x-ferry-proxy', 'seen')
  return response
}

export const config = {
  matcher: ['/ssr', '/proxy-redirect', '/proxy-rewrite', '/blog/:path*', '/api/:path*'],
}

export const metadata = { title: 'Ferry showcase', description: 'Every Next.js feature Ferry serves' }

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>
        <nav>
          <a href="/">home</a> · <a href="/isr">isr</a> · <a href="/ssr">ssr</a> ·{' '}
          <a href="/blog/hello">blog</a> · <a href="/stream">stream</a> · <a href="/actions">actions</a> ·{' '}
          <a href="/image">image</a> · <a href="/legacy/static">pages static</a> ·{' '}
          <a href="/legacy/ssr">pages ssr</a>
        </nav>
        <main>{children}</main>
      </body>
    </html>
  )
}
